"""The Ryu application: `ryu-manager controller.app`.

This is the only module that imports Ryu. It turns Ryu events into calls on the framework-free
core (controller/core.py), serves the REST API on Ryu's WSGI server, and translates the pipeline's
flows (flows/) to and from OpenFlow messages.
"""
import logging
import os
import signal

from ryu.app.wsgi import ControllerBase, Response, WSGIApplication, route
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu import cfg
from ryu.ofproto import ofproto_v1_3

from controller.api import NorthboundApi
from controller.core import Config, WeftCore

LOG = logging.getLogger("weft.app")
APP_KEY = "weft_app"

CONF = cfg.CONF
CONF.register_opts([
    cfg.StrOpt("state_dir", default=Config.state_dir, help="where the embedded NB keeps its files"),
    cfg.StrOpt("nb_remote", default="", help="an existing NB ovsdb-server (e.g. tcp:10.0.0.5:6641, or "
                                             "a comma-separated Raft cluster); empty = embedded NB"),
    cfg.IntOpt("underlay_mtu", default=Config.underlay_mtu, help="smallest MTU of the hosts' underlay"),
    cfg.StrOpt("of_target", default="", help="OpenFlow target for joining hosts that name none"),
], group="weft")
# Ryu binds its REST API to every address by default; Weft's is an admin API, so loopback unless told.
CONF.set_default("wsapi_host", "127.0.0.1")


def _config_from_conf():
    return Config(state_dir=CONF.weft.state_dir, nb_remote=CONF.weft.nb_remote,
                  underlay_mtu=CONF.weft.underlay_mtu, of_target=CONF.weft.of_target)


class WeftApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.core = WeftCore(hub, _config_from_conf())
        self.core.start()
        self.api = NorthboundApi(self.core)
        kwargs["wsgi"].register(WeftRestController, {APP_KEY: self})
        signal.signal(signal.SIGTERM, self._terminate)

    def _terminate(self, signum, frame):
        # Signal handlers run on eventlet's hub, where nothing may block: stop from a green thread.
        hub.spawn(self._shutdown)

    def _shutdown(self):
        LOG.info("SIGTERM: stopping")
        self.core.stop()
        os._exit(0)

    def stop(self):
        self.core.stop()
        super().stop()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev):
        self.core.switch_connected(ev.msg.datapath_id, ev.msg.datapath)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        if ev.state == DEAD_DISPATCHER and ev.datapath.id is not None:
            self.core.switch_disconnected(ev.datapath.id, ev.datapath)


class WeftRestController(ControllerBase):
    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.app = data[APP_KEY]

    @route("weft", "/v1/{path:.*}", methods=["GET", "POST", "PUT", "DELETE"])
    def dispatch(self, req, path, **_):
        status, body = self.app.api.handle(req.method, req.path, req.body, req.query_string)
        return Response(status=status, content_type="application/json", charset="utf-8",
                        body=(json_dumps(body) + "\n").encode())


def json_dumps(value):
    import json
    return json.dumps(value, indent=1, sort_keys=True)
