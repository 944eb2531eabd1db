"""Weft's command line side: the REST client, the `weft` CLI, host-local work and the lab."""
