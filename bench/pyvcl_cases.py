"""pyvcl's cases: the same bulk and ping-pong scripts as the kernel and LDP cases, with
``--module pyvcl.socket`` on both sides (VCL_CONFIG from the run), so ratios compare stacks."""

from bench.cvcl import ScriptStack, register_script_cases

register_script_cases(
    "pyvcl",
    ScriptStack(
        server_ldp=False,
        client_ldp=False,
        server_module="pyvcl.socket",
        client_module="pyvcl.socket",
    ),
)
