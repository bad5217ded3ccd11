"""A real service process for the end-to-end tests: ``python -m export.serve`` on a free
127.0.0.1 port, waited for through ``GET /healthz``."""

import os
import subprocess
import sys
import time

from tests import serve_helpers as sh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Server:
    """``with Server(model, gallery) as server: server.url``; :meth:`kill` sends SIGKILL."""

    def __init__(self, model_dir, gallery, *args, startup_timeout=120):
        self.port = sh.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
        self.log_path = f"{gallery}.{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "export.serve", f"--model={model_dir}",
             f"--gallery={gallery}", f"--port={self.port}", *args],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait(startup_timeout)

    def _wait(self, timeout):
        import httpx  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n"
                                   f"{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /healthz in {timeout} s:\n{self.log()}")

    def log(self):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def kill(self):
        self.process.kill()  # SIGKILL: no cleanup, no atexit, as a crash
        self.process.wait(30)
        self._log.close()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
