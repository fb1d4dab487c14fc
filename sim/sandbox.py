"""A throwaway RabbitMQ node and PostgreSQL cluster of our own, for the chaos suite.

The chaos suite restarts the broker and the database server. Restarting the machine's
own (port 5672 and 5432) would break everyone else's runs on it, so the suite starts a
second RabbitMQ node (its own node name, ports, Mnesia and log directories, no plugins,
its own config files instead of /etc/rabbitmq's) and a PostgreSQL cluster (`initdb` in a
temporary directory, its own port and socket directory), restarts only those, and
removes both at the end, on failure too.

Debian's packages: the node runs as the `rabbitmq` user, so it shares that user's Erlang
cookie and `rabbitmqctl -n <node>` (which Debian's wrapper runs as `rabbitmq`) can reach
it; the cluster runs as `postgres`, which PostgreSQL requires when we are root.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQ_HOME = "/var/lib/rabbitmq"  # where the rabbitmq user's Erlang cookie is


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {tool} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


def _as(user: str) -> list[str]:
    """Run as `user` when we are root (as on the CI machine); as ourselves otherwise."""
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def _own(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user, user)


def _run(cmd: list[str], timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-3:])} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[:400]}")
    return result


@dataclass
class Sandbox:
    """Ports: AMQP `base`, Erlang distribution `base + 1`, PostgreSQL `base + 2`."""

    base_port: int
    name: str = "chaos"
    root: Path | None = None  # made by start(); removed by stop()

    @property
    def node(self) -> str:
        # One node name per port block: two sandboxes on a machine never meet.
        return f"{self.name}{self.base_port}@localhost"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.base_port}/"

    @property
    def pg_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.base_port + 2}"

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.root = self.root or Path(tempfile.mkdtemp(prefix="chain-chaos-"))
        self.root.chmod(0o755)  # the rabbitmq and postgres users work beneath it
        self._prepare_rabbitmq()
        self._prepare_postgres()
        self.start_rabbitmq()
        self.start_postgres()

    def stop(self) -> None:
        """Stop both and remove their files; safe to call after a failed start."""
        if self.root is None:
            return
        if (self.root / "rabbitmq").exists():
            _run(self._ctl("stop"), check=False, timeout=60)
            self._kill_leftover_beam()
        if (self.root / "pg" / "PG_VERSION").exists():
            _run([*_as("postgres"), _pg_bin("pg_ctl"), "-D", str(self.root / "pg"), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Sandbox":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- RabbitMQ ------------------------------------------------------------------------

    def _prepare_rabbitmq(self) -> None:
        home = self.root / "rabbitmq"
        home.mkdir()
        (home / "enabled_plugins").write_text("[].\n")  # streams and quorum queues are core in 3.10
        (home / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.base_port}\nloopback_users = none\n")
        (home / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's, which names the machine's node
        for path in (home, *home.iterdir()):
            _own(path, "rabbitmq")

    def _rabbitmq_env(self) -> list[str]:
        home = self.root / "rabbitmq"
        return [
            f"HOME={RABBITMQ_HOME}",
            f"RABBITMQ_NODENAME={self.node}",
            f"RABBITMQ_NODE_PORT={self.base_port}",
            f"RABBITMQ_DIST_PORT={self.base_port + 1}",
            f"RABBITMQ_MNESIA_BASE={home / 'mnesia'}",
            f"RABBITMQ_LOG_BASE={home / 'log'}",
            f"RABBITMQ_PID_FILE={home / 'pid'}",
            f"RABBITMQ_ENABLED_PLUGINS_FILE={home / 'enabled_plugins'}",
            f"RABBITMQ_CONFIG_FILE={home / 'rabbitmq.conf'}",
            f"RABBITMQ_CONF_ENV_FILE={home / 'rabbitmq-env.conf'}",
            "ERL_EPMD_ADDRESS=127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
        ]

    def _ctl(self, *args: str) -> list[str]:
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        return [ctl, "-q", "-n", self.node, *args]

    def start_rabbitmq(self) -> None:
        _run([*_as("rabbitmq"), "env", *self._rabbitmq_env(), RABBITMQ_SERVER, "-detached"])
        deadline = time.monotonic() + 90
        while _run(self._ctl("await_startup", "--timeout", "10"), check=False, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox's RabbitMQ node {self.node} did not start (logs in {self.root}/rabbitmq/log)")
            time.sleep(0.5)

    def stop_rabbitmq(self) -> None:
        _run(self._ctl("stop"), timeout=120)  # returns once the node is down

    def restart_rabbitmq(self, down: float = 1.0) -> None:
        """Stop the node and start it again on the same data: what was confirmed must still be there."""
        self.stop_rabbitmq()
        time.sleep(down)
        self.start_rabbitmq()

    def _kill_leftover_beam(self) -> None:
        pid_file = self.root / "rabbitmq" / "pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), 9)
            except (ValueError, ProcessLookupError, PermissionError):
                pass

    def rabbitmqctl(self, *args: str) -> str:
        return _run(self._ctl(*args)).stdout

    # --- PostgreSQL ----------------------------------------------------------------------

    def _prepare_postgres(self) -> None:
        data = self.root / "pg"
        sockets = self.root / "pg-sockets"
        for d in (data, sockets):
            d.mkdir()
            _own(d, "postgres")
        _run([*_as("postgres"), _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions"])
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.base_port + 2}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sockets}'\n"
                "max_connections = 300\nshared_buffers = 128MB\n"
            )

    def _pg_ctl(self, *args: str) -> list[str]:
        data = self.root / "pg"
        return [*_as("postgres"), _pg_bin("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w", "-t", "120", *args]

    def start_postgres(self) -> None:
        _run(self._pg_ctl("start"))

    def restart_postgres(self) -> None:
        """An immediate stop (no checkpoint, as a crash) and a start with crash recovery:
        what was committed must still be there."""
        _run(self._pg_ctl("-m", "immediate", "restart"))
