pytest_plugins = ["pyvcl.testing.plugin", "pytester"]
