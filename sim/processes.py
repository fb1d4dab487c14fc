"""Start, kill and stop the chain's processes (three services and their outbox relays)."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sim.environment import SERVICES, Environment


@dataclass
class ProcessGroup:
    """The chain's processes: `<service>` and `<service>-relay`; with `replicas` > 1 also
    `<service>-2`, `<service>-relay-2`, ... consuming the same queues and databases, each
    service replica on HTTP ports of its own (the next block of three after the first's)."""

    environment: Environment
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    replicas: int = 1

    def commands(self) -> dict[str, list[str]]:
        cmds = {}
        for replica in range(1, self.replicas + 1):
            suffix = "" if replica == 1 else f"-{replica}"
            for service in SERVICES:
                cmds[service + suffix] = [sys.executable, "-m", f"services.{service}.app"]
                cmds[f"{service}-relay{suffix}"] = [sys.executable, "-m", "shared.relay", service]
        return cmds

    def start(self, name: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        env = self.environment.env()
        service, replica = replica_of(name)
        env[f"CHAIN_{service.upper()}_PORT"] = str(self.port(service, replica))
        if "-relay" in name:  # each relay's metrics on a port of its own, replicas too
            port = self.environment.relay_metrics_port(service) + len(SERVICES) * (replica - 1)
            env["CHAIN_RELAY_METRICS_PORT"] = str(port)
        self.procs[name] = subprocess.Popen(
            self.commands()[name], env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def port(self, service: str, replica: int = 1) -> int:
        return self.environment.base_port + len(SERVICES) * (replica - 1) + SERVICES.index(service)

    def url(self, name: str) -> str:
        """The HTTP address of a service process (`bosetting`, `bosetting-2`)."""
        return f"http://127.0.0.1:{self.port(*replica_of(name))}"

    def check_ports(self) -> None:
        ports = [self.port(s, r) for r in range(1, self.replicas + 1) for s in SERVICES]
        busy = [port for port in ports if _in_use(port)]
        if busy:
            raise RuntimeError(f"ports {busy} are in use: is another demo or test run still going?")

    async def start_all(self, timeout: float = 60.0) -> None:
        self.check_ports()
        for name in self.commands():
            self.start(name)
        await self.wait_ready(SERVICES, timeout)

    async def wait_ready(self, services, timeout: float = 60.0) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            for service in services:
                deadline = asyncio.get_running_loop().time() + timeout
                while True:
                    self._check_alive(service)
                    try:
                        if (await client.get(f"{self.url(service)}/health/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if asyncio.get_running_loop().time() > deadline:
                        raise TimeoutError(f"{service} not ready after {timeout}s (see {self.log_dir}/{service}.log)")
                    await asyncio.sleep(0.2)

    def _check_alive(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} (see {self.log_dir}/{name}.log)")

    def kill(self, name: str) -> None:
        """SIGKILL: no cleanup, no graceful shutdown; what was in flight must not be lost."""
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def terminate(self, name: str, timeout: float = 60.0) -> int | None:
        """SIGTERM: a graceful stop; the exit code, or None if it outlived `timeout` (then killed)."""
        proc = self.procs.pop(name)
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def stop_all(self, timeout: float = 30.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def replica_of(name: str) -> tuple[str, int]:
    """`bosetting-relay-2` -> ("bosetting", 2); `kompetanse` -> ("kompetanse", 1)."""
    service, _, rest = name.partition("-")
    number = rest.rsplit("-", 1)[-1]
    return service, int(number) if number.isdigit() else 1


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
