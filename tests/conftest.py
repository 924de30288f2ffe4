pytest_plugins = ["pyvcl.testing.plugin", "pytester"]


def pytest_report_header() -> str:
    from .shared_data import SHARED

    found = (
        "found: cross-checks collected" if SHARED.is_dir() else "absent: cross-checks not collected"
    )
    return f"ground truth {SHARED} {found} (tests/fixtures is always used)"
