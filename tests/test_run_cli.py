"""``pyvcl run`` as a user runs it: the program runs as under plain python (compared with
plain python's output for the same program), the fallback, and the mode handed down to Python
child processes.  Every process runs with a timeout; no test needs VPP except the last ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyvcl.cli.run import split_command_line
from pyvcl.interpose.boot import BOOT_DIR

ROOT = Path(__file__).resolve().parents[1]

# What the program sees of how it was started (the same lines under both interpreters).
PROBE = """\
import json, sys, warnings
warnings.warn("from the program", DeprecationWarning)
main = sys.modules["__main__"]
print(json.dumps({
    "argv": sys.argv,
    "name": __name__,
    "path0": sys.path[0],
    "file": globals().get("__file__"),
    "spec": getattr(__spec__, "name", None),
    "main_is_this_module": main.__dict__ is globals(),
    "dunders": sorted(k for k in globals() if k.startswith("__")),
    "loader": getattr(__loader__, "__name__", type(__loader__).__name__),
}))
"""


class Ran:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.status = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self) -> str:
        return f"<exit {self.status}\nstdout: {self.out}\nstderr: {self.err}>"


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No VPP (the default app socket names a missing file), pyvcl from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCL_", "PYVCL_"))}
    env.update(VCL_VPP_SAPI_SOCKET=str(tmp_path / "no-vpp"), PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def run(
    cmd: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None, timeout: float = 60
) -> Ran:
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} hung for {timeout} s:\n{out}\n{err}")
    return Ran(subprocess.CompletedProcess(cmd, proc.returncode, out, err))


def pyvcl_run(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyvcl", "run", *args]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory with the probe as a script, a module and a package with __main__."""
    d = tmp_path / "work"
    (d / "pkg").mkdir(parents=True)
    (d / "probe.py").write_text(PROBE)
    (d / "probe_mod.py").write_text(PROBE)
    (d / "pkg" / "__init__.py").write_text("")
    (d / "pkg" / "__main__.py").write_text(PROBE)
    (d / "link").mkdir()
    (d / "link" / "probe.py").symlink_to(d / "probe.py")  # sys.path[0]: the real directory
    return d


# -- the program runs as under python -----------------------------------------------------------
PROGRAMS = [
    pytest.param(["probe.py"], id="script"),
    pytest.param(["probe.py", "-v", "--kernel", "--", "-m", "x"], id="script-args-like-options"),
    pytest.param(["{work}/probe.py", "a b"], id="script-absolute"),
    pytest.param(["link/probe.py"], id="script-symlink"),
    pytest.param(["-m", "probe_mod", "-c", "1"], id="module"),
    pytest.param(["-mprobe_mod", "x"], id="module-attached"),
    pytest.param(["-m", "pkg", "y"], id="package-main"),
    pytest.param(["-c", PROBE.replace("__spec__", "None"), "-v", "z"], id="code"),
    pytest.param(["-", "from-stdin"], id="stdin"),
]


@pytest.mark.parametrize("program", PROGRAMS)
def test_the_program_sees_what_python_gives_it(
    program: list[str], work: Path, tmp_path: Path
) -> None:
    program = [a.replace("{work}", str(work)) for a in program]
    stdin = PROBE if program[0] == "-" else None
    env = clean_env(tmp_path)
    plain = run([sys.executable, *program], env, work, stdin)
    ran = run(pyvcl_run("--kernel", *program), env, work, stdin)
    assert plain.status == 0, plain
    assert (ran.status, ran.out, ran.err) == (plain.status, plain.out, plain.err)
    seen = json.loads(ran.out)
    assert seen["name"] == "__main__" and seen["main_is_this_module"]
    assert "DeprecationWarning: from the program" in ran.err  # __main__'s warnings are shown


def test_options_end_at_the_program() -> None:
    from pyvcl.cli.run import build_parser

    parser = build_parser()
    args, prog = split_command_line(parser, ["--app-socket", "x.py", "-v", "y.py", "-v"])
    assert args.app_socket == "x.py" and args.verbose
    assert (prog.kind, prog.target, prog.args) == ("script", "y.py", ["-v"])
    args, prog = split_command_line(parser, ["--scope", "global", "--", "-v.py", "--kernel"])
    assert not args.kernel and (prog.kind, prog.target, prog.args) == (
        "script",
        "-v.py",
        ["--kernel"],
    )
    args, prog = split_command_line(parser, ["--kernel", "-c", "print(1)", "-m", "x"])
    assert args.kernel and (prog.kind, prog.target, prog.args) == ("code", "print(1)", ["-m", "x"])


ENDINGS = [
    pytest.param("raise SystemExit(3)", id="exit-3"),
    pytest.param("import sys; sys.exit('bye')", id="exit-string"),
    pytest.param("import sys; print('out'); sys.exit()", id="exit-none"),
    pytest.param("def f():\n    return 1 / 0\nf()\n", id="uncaught"),
    pytest.param("try:\n    {}['k']\nexcept KeyError:\n    raise ValueError('v')\n", id="chained"),
    pytest.param("x = (\n", id="syntax-error"),
    pytest.param("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\n", id="sigint"),
    pytest.param(
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "import os; os.kill(os.getpid(), signal.SIGTERM)",
        id="sigterm",
    ),
    pytest.param(
        "import atexit, threading, time\natexit.register(print, 'atexit')\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread'))).start()\n"
        "raise KeyboardInterrupt\n",
        id="keyboard-interrupt-after-thread-and-atexit",
    ),
]


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("how", ["script", "code"])
def test_exit_status_and_traceback_as_python(
    ending: str, how: str, work: Path, tmp_path: Path
) -> None:
    (work / "prog.py").write_text(ending)
    program = ["prog.py"] if how == "script" else ["-c", ending]
    env = clean_env(tmp_path)
    plain = run([sys.executable, *program], env, work)
    ran = run(pyvcl_run("--kernel", *program), env, work)
    assert (ran.status, ran.out, ran.err) == (plain.status, plain.out, plain.err)


def test_uncaught_in_a_module_shows_the_program_not_the_runner(work: Path, tmp_path: Path) -> None:
    (work / "boom.py").write_text("def f():\n    raise RuntimeError('boom')\nf()\n")
    ran = run(pyvcl_run("--kernel", "-m", "boom"), clean_env(tmp_path), work)
    assert ran.status == 1
    assert ran.err.startswith("Traceback (most recent call last):\n"), ran
    assert 'boom.py", line 3, in <module>' in ran.err and "RuntimeError: boom" in ran.err
    assert "pyvcl" not in ran.err and "runpy" not in ran.err, ran


@pytest.mark.parametrize(
    ("program", "status", "message"),
    [
        (["-m", "no_such_module"], 1, "No module named no_such_module"),
        (["-m", "http"], 1, "'http' is a package and cannot be directly executed"),
        (["missing.py"], 2, "can't open file"),
    ],
)
def test_what_cannot_run_fails_as_in_python(
    program: list[str], status: int, message: str, work: Path, tmp_path: Path
) -> None:
    env = clean_env(tmp_path)
    plain = run([sys.executable, *program], env, work)
    ran = run(pyvcl_run("--kernel", *program), env, work)
    assert plain.status == ran.status == status
    assert message in plain.err and ran.err.startswith("pyvcl run: ") and message in ran.err


def test_a_console_script_on_path_runs_as_its_shebang_would(work: Path, tmp_path: Path) -> None:
    """``pyvcl run uvicorn app:app``: a name that is no file here is looked up on PATH and run
    if it is a Python program, with its path as ``sys.argv[0]``, as its ``#!`` line would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "pyvcl-probe-tool"
    tool.write_text("#!/usr/bin/env python3\n" + PROBE)
    tool.chmod(0o755)
    env = clean_env(tmp_path, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    plain = run([str(tool), "x", "--y"], env, work)
    ran = run(pyvcl_run("--kernel", "pyvcl-probe-tool", "x", "--y"), env, work)
    assert plain.status == ran.status == 0, ran
    seen, want = json.loads(ran.out.splitlines()[-1]), json.loads(plain.out.splitlines()[-1])
    assert seen["argv"] == want["argv"] == [str(tool), "x", "--y"]
    assert seen["path0"] == want["path0"] == str(bin_dir)


@pytest.mark.parametrize("interpreter", [sys.executable, "python3"])
def test_the_interpreters_name_before_the_program_is_left_out(
    interpreter: str, work: Path, tmp_path: Path
) -> None:
    """``pyvcl run python3 -m MODULE`` (as LDP users type): the program runs in pyvcl's own
    interpreter, so the name is dropped and what follows is the program."""
    env = clean_env(tmp_path)
    for program in (["-m", "probe_mod", "a"], ["probe.py", "b"]):
        plain = run([sys.executable, *program], env, work)
        ran = run(pyvcl_run("--kernel", interpreter, *program), env, work)
        assert plain.status == ran.status == 0, ran
        seen, want = json.loads(ran.out.splitlines()[-1]), json.loads(plain.out.splitlines()[-1])
        assert seen["argv"] == want["argv"] and seen["name"] == "__main__"


@pytest.mark.parametrize(
    ("program", "message"),
    [
        (["ls", "-l"], "'ls' is not a Python program"),
        ([sys.executable, "-u", "probe.py"], "options of the interpreter go before -m pyvcl"),
        ([sys.executable], "give the program"),
        (["no-such-tool-anywhere"], "can't open file"),
    ],
)
def test_what_is_not_a_python_program_is_refused_clearly(
    program: list[str], message: str, work: Path, tmp_path: Path
) -> None:
    ran = run(pyvcl_run("--kernel", *program), clean_env(tmp_path), work)
    assert ran.status == 2 and ran.err.startswith("pyvcl run: ") and message in ran.err, ran
    assert "Traceback" not in ran.err and not ran.out


def test_usage_errors(work: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    for args in (["--kernel"], ["--scope", "nowhere", "-c", "print(1)"], ["-m"]):
        ran = run(pyvcl_run(*args), env, work)
        assert ran.status == 2 and "usage: pyvcl run" in ran.err and not ran.out, (args, ran)
    ran = run(pyvcl_run("--help"), env, work)
    assert ran.status == 0 and "-m MODULE | -c CODE | SCRIPT" in ran.out
    ran = run([sys.executable, "-m", "pyvcl", "--help"], env, work)
    assert ran.status == 0 and "run a Python program with VPP" in ran.out


# -- the stack: fallback, no fallback ----------------------------------------------------------
def test_fallback_is_one_notice_and_nothing_patched(work: Path, tmp_path: Path) -> None:
    code = (
        "import socket, sys, threading\n"
        "import pyvcl.interpose as i\n"
        "s = socket.create_server(('127.0.0.1', 0)); s.close()\n"
        "print(i.enabled(), socket.socket.__module__, type(s).__module__, "
        "threading.active_count(), 'pyvcl.app' in sys.modules)\n"
    )
    ran = run(pyvcl_run("-c", code), clean_env(tmp_path), work)
    assert ran.status == 0, ran
    # no watcher thread, and not even the data path imported (a stat told it all)
    assert ran.out == "False socket socket 1 False\n", ran
    notice = ran.err.splitlines()
    assert len(notice) == 1, ran
    assert notice[0].startswith("pyvcl run: VPP not reachable (") and notice[0].endswith(
        "; using kernel sockets"
    )


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"VCL_VPP_SAPI_SOCKET": "unix:/nonexistent/sapi"},
        {"VCL_VPP_SAPI_SOCKET": "/nonexistent/sapi"},
        {"VCL_APP_NAMESPACE_ID": "pyvcl-test-ns"},
        {"VCL_APP_NAMESPACE_ID": "pyvcl-test-ns", "VCL_VPP_SAPI_SOCKET": "/nonexistent/x"},
    ],
)
def test_the_quick_fallback_agrees_with_the_attach(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stat that spares the fallback the data path's import finds the socket the attach
    would use, and says what the attach would say."""
    from pyvcl import app, config, stack
    from pyvcl.api.sapi import SapiSocket
    from pyvcl.errors import VppUnreachable

    assert stack._VCL_CONF_DEFAULT == config.VCL_CONF_DEFAULT
    assert stack._DEFAULT_RUNTIME_DIR == app.DEFAULT_RUNTIME_DIR
    if os.path.exists(config.VCL_CONF_DEFAULT):
        pytest.skip(f"{config.VCL_CONF_DEFAULT} exists here: the quick check stands aside")
    for name in [k for k in os.environ if k.startswith("VCL_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = config.load_vcl_config(None)
    expected = cfg.app_socket_path() or str(app.default_app_socket(cfg.namespace_id))
    assert stack.default_app_socket_without_config() == expected
    if os.path.exists(expected):
        pytest.skip(f"{expected} exists here")
    quick = stack.absent_default_vpp(stack.StackChoice())
    with pytest.raises(VppUnreachable) as attach:
        SapiSocket.connect(expected, 1.0)
    assert quick is not None
    assert (str(quick), quick.errno) == (str(attach.value), attach.value.errno)
    assert stack.absent_default_vpp(stack.StackChoice(fallback=False)) is None


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["--no-fallback"], id="no-fallback"),
        pytest.param(["--app-socket", "{tmp}/named-no-vpp"], id="named-vpp"),
    ],
)
def test_no_vpp_without_fallback_fails_before_the_program(
    options: list[str], work: Path, tmp_path: Path
) -> None:
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    ran = run(pyvcl_run(*options, "-c", "print('the program ran')"), clean_env(tmp_path), work)
    assert ran.status == 1 and not ran.out, ran
    assert ran.err.startswith("pyvcl run: VPP not reachable: ") and len(ran.err.splitlines()) == 1


def test_bad_vcl_config_fails_before_the_program(work: Path, tmp_path: Path) -> None:
    conf = tmp_path / "vcl.conf"
    conf.write_text("vcl {\n  rx-fifo-size 4m\n}\n")
    ran = run(pyvcl_run("--vcl-config", str(conf), "-c", "print('ran')"), clean_env(tmp_path), work)
    assert ran.status == 1 and not ran.out and "rx-fifo-size" in ran.err, ran
    assert "Traceback" not in ran.err


# -- Python child processes ---------------------------------------------------------------------
CHILD_REPORT = (
    "import json, os, sys\n"
    "import pyvcl.interpose as i\n"
    "print(json.dumps({'run': json.loads(os.environ.get('PYVCL_RUN', 'null')), "
    "'enabled': i.enabled(), 'pythonpath': os.environ.get('PYTHONPATH', ''), "
    "'user_site': 'user_sitecustomize' in sys.modules, 'path': sys.path}))\n"
)


def test_children_inherit_the_kernel_mode_at_no_cost(work: Path, tmp_path: Path) -> None:
    """After the fallback (as with --kernel) children see PYVCL_RUN and start as plain python
    does: PYTHONPATH untouched, so no boot, nothing of pyvcl imported."""
    (work / "child.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps([json.loads(os.environ['PYVCL_RUN'])['kernel'], "
        "os.environ['PYTHONPATH'], [m for m in sys.modules if m.startswith('pyvcl')]]))\n"
    )
    parent = (
        "import multiprocessing as mp, subprocess, sys\n"
        "def spawned(q):\n"
        "    import os\n"
        "    q.put(os.environ.get('PYVCL_RUN'))\n"
        "if __name__ == '__main__':\n"
        "    subprocess.run([sys.executable, 'child.py'], check=True)\n"
        "    ctx = mp.get_context('spawn'); q = ctx.Queue()\n"
        "    p = ctx.Process(target=spawned, args=(q,)); p.start(); print(q.get(timeout=30))\n"
        "    p.join(30)\n"
    )
    (work / "parent.py").write_text(parent)
    for options in ([], ["--kernel"]):
        ran = run(pyvcl_run(*options, "parent.py"), clean_env(tmp_path), work)
        assert ran.status == 0, ran
        child, spawned = ran.out.splitlines()
        assert json.loads(child) == [True, str(ROOT), []]
        assert json.loads(spawned)["kernel"] is True
        assert len(ran.err.splitlines()) == (0 if options else 1), ran  # one notice only


def boot_env(tmp_path: Path, user_dir: Path, **choice: Any) -> dict[str, str]:
    """What a child of a runner on VPP gets: the mode and the boot directory first."""
    mode = json.dumps({"kernel": False, **choice})
    path = os.pathsep.join([BOOT_DIR, str(user_dir), str(ROOT)])
    return clean_env(tmp_path, PYVCL_RUN=mode, PYTHONPATH=path)


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A user's own sitecustomize, which the boot must not hide."""
    d = tmp_path / "user"
    d.mkdir()
    (d / "sitecustomize.py").write_text(
        "import sys\nsys.modules['user_sitecustomize'] = sys.modules[__name__]\n"
    )
    return d


def test_a_child_boots_falls_back_and_still_runs_the_users_sitecustomize(
    work: Path, tmp_path: Path, user_dir: Path
) -> None:
    plain_env = clean_env(tmp_path, PYTHONPATH=os.pathsep.join([str(user_dir), str(ROOT)]))
    plain = run([sys.executable, "-c", CHILD_REPORT], plain_env, work)
    ran = run([sys.executable, "-c", CHILD_REPORT], boot_env(tmp_path, user_dir), work)
    assert ran.status == 0, ran
    seen, expected = json.loads(ran.out), json.loads(plain.out)
    assert seen["user_site"] and expected["user_site"]
    assert seen["path"] == expected["path"]  # the boot directory is gone from sys.path
    assert not seen["enabled"]
    # its own children start on the kernel, without the boot
    assert seen["run"]["kernel"] is True and BOOT_DIR not in seen["pythonpath"]
    lines = ran.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyvcl run: VPP not reachable ("), ran
    assert lines[0].endswith("using kernel sockets")


def test_a_child_without_fallback_exits_before_its_program(
    work: Path, tmp_path: Path, user_dir: Path
) -> None:
    env = boot_env(tmp_path, user_dir, fallback=False)
    ran = run([sys.executable, "-c", "print('the program ran')"], env, work)
    assert ran.status == 1 and not ran.out, ran
    assert len(ran.err.splitlines()) == 1 and "no fallback" in ran.err


def test_a_bad_mode_does_not_break_the_child(work: Path, tmp_path: Path, user_dir: Path) -> None:
    env = boot_env(tmp_path, user_dir)
    env["PYVCL_RUN"] = '{"kernel": "perhaps"}'
    ran = run([sys.executable, "-c", CHILD_REPORT], env, work)
    assert ran.status == 0 and json.loads(ran.out)["user_site"], ran
    assert ran.err == "pyvcl run: ignoring PYVCL_RUN (bad value for 'kernel': 'perhaps')\n"


def test_the_boot_directory_alone_does_nothing(work: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path, PYTHONPATH=os.pathsep.join([BOOT_DIR, str(ROOT)]))
    code = "import sys; print(sorted(m for m in sys.modules if m.startswith('pyvcl')))"
    ran = run([sys.executable, "-c", code], env, work)
    assert (ran.status, ran.out, ran.err) == (0, "[]\n", "")


# -- with VPP ----------------------------------------------------------------------------------
def test_the_program_and_its_children_run_on_vpp(vpp: Any, work: Path, tmp_path: Path) -> None:
    app_socket = str(vpp.app_socket())
    program = textwrap.dedent(
        """\
        import socket, subprocess, sys
        import pyvcl.interpose as i
        with socket.create_server(("127.0.0.1", 0)) as s:
            print("parent", i.enabled(), flush=True)
        code = "import pyvcl.interpose as i; print('child', i.enabled())"
        subprocess.run([sys.executable, "-c", code], check=True)
        """
    )
    ran = run(pyvcl_run("--app-socket", app_socket, "-c", program), clean_env(tmp_path), work)
    assert (ran.status, ran.out, ran.err) == (0, "parent True\nchild True\n", ""), ran


def test_a_program_connects_to_its_own_listeners(vpp: Any, work: Path, tmp_path: Path) -> None:
    """VPP does not connect an app to itself: a process that talks to its own listener does
    it from a second app (pyvcl.interpose), blocking, with http and with asyncio."""
    program = textwrap.dedent(
        """\
        import asyncio, http.server, socket, threading, urllib.request
        srv = socket.create_server(("127.0.0.1", 0))
        def serve():
            c, _ = srv.accept()
            c.sendall(c.recv(100).upper())
            c.close()
        threading.Thread(target=serve, daemon=True).start()
        with socket.create_connection(srv.getsockname(), timeout=10) as s:
            s.sendall(b"blocking")
            print(s.recv(100).decode(), type(s).__name__)
        h = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=h.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{h.server_address[1]}/"
        print(urllib.request.urlopen(url, timeout=10).status)
        h.shutdown()
        async def main():
            async def handle(r, w):
                w.write((await r.read(100)).upper())
                await w.drain()
                w.close()
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
            w.write(b"asyncio")
            print((await r.read(100)).decode())
            w.close()
            server.close()
        asyncio.run(asyncio.wait_for(main(), 20))
        """
    )
    app_socket = str(vpp.app_socket())
    ran = run(pyvcl_run("--app-socket", app_socket, "-c", program), clean_env(tmp_path), work)
    assert ran.status == 0, ran
    assert ran.out.splitlines() == ["BLOCKING InterposedSocket", "200", "ASYNCIO"], ran


def test_tls_over_vpp_sockets(vpp: Any, work: Path, tmp_path: Path) -> None:
    """Python's ssl over VPP sessions, unmodified: an https http.server (its listener wrapped
    by SSLContext.wrap_socket) serving urllib, and asyncio's own TLS."""
    here = Path(__file__).parent
    cert, key = str(here / "tls_test_cert.pem"), str(here / "tls_test_key.pem")
    program = textwrap.dedent(
        """\
        import asyncio, hashlib, http.server, os, ssl, sys, threading, urllib.request
        cert, key = sys.argv[1], sys.argv[2]
        body = os.urandom(1 << 20)
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *a):
                pass
        srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        srv_ctx.load_cert_chain(cert, key)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        httpd.socket = srv_ctx.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        cli_ctx = ssl.create_default_context(cafile=cert)
        url = f"https://127.0.0.1:{httpd.server_address[1]}/"
        got = urllib.request.urlopen(url, context=cli_ctx, timeout=20).read()
        print(got == body, type(httpd.socket).__name__)
        httpd.shutdown()
        async def main():
            async def handle(r, w):
                w.write((await r.read(100)).upper())
                await w.drain()
                w.close()
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=srv_ctx)
            port = server.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=cli_ctx)
            w.write(b"asyncio tls")
            await w.drain()
            print((await r.read(100)).decode())
            w.close()
            server.close()
        asyncio.run(asyncio.wait_for(main(), 20))
        """
    )
    (work / "tls_prog.py").write_text(program)
    args = pyvcl_run("--app-socket", str(vpp.app_socket()), "tls_prog.py", cert, key)
    ran = run(args, clean_env(tmp_path), work)
    assert ran.status == 0, ran
    assert ran.out.splitlines() == ["True CarriedSSLSocket", "ASYNCIO TLS"], ran
