import signal

pytest_plugins = ["pyvcl.testing.plugin", "pytester"]


def pytest_configure() -> None:
    # A run started with SIGINT ignored (a background job of a shell without job control,
    # as `( cmd & )` or nohup makes it) passes the ignore on to every child: their Pythons
    # then install no KeyboardInterrupt handler, and each Ctrl-C test hangs until its
    # timeout.  Those tests are about a program as a terminal starts it: put SIGINT back.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header() -> str:
    from .shared_data import SHARED

    found = (
        "found: cross-checks collected" if SHARED.is_dir() else "absent: cross-checks not collected"
    )
    return f"ground truth {SHARED} {found} (tests/fixtures is always used)"
