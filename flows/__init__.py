"""Weft's OpenFlow pipeline, pure and deterministic (no Ryu, no I/O).

pipeline  tables, registers, cookie layout, well-known ports: named once
model     Topology in (HostState, NetworkState, PortState, Binding, RouterState...), Flow out
compiler  Topology -> {host: {cookie: frozenset[Flow]}}; Compiler.update() is incremental
diff      desired vs actual flows of a switch -> add / modify / delete
trace     offline packet tracer over compiled flows (ovn-trace in miniature), with a
          minimal conntrack; format_trace / trace_to_json / trace_to_ip for `weft trace`
ofctl     Flow -> ovs-ofctl text; cookie counts from real dump-flows output
docgen    docs/pipeline.md from pipeline.py
examples  small and scale topologies for tests and benchmarks
"""
