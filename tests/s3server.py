"""A real S3-compatible server for tests: SeaweedFS's ``weed mini`` (master, volume, filer and S3
gateway in one process) on free loopback ports, built by scripts/seaweedfs.sh and cached outside
the repository. Credentials come from an S3 identities file, as a deployment would give them."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from usagelog.process import Child, free_port

REPO = Path(__file__).resolve().parents[1]


def seaweedfs_binary() -> Path:
    """Build (or reuse the cached) ``weed``; its path."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "seaweedfs.sh")], capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return Path(result.stdout.strip().splitlines()[-1])


class S3Server:
    """``weed mini`` in ``workdir`` with one identity allowed everything. Stopped and started
    again, it keeps its ports and its data (the directory)."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.access_key = "usagelog-" + uuid.uuid4().hex[:8]
        self.secret_key = "s3cret-" + uuid.uuid4().hex  # tests check it is never printed
        # One free port per listener; the gRPC ones too, or weed derives them as port + 10000.
        names = ("master", "volume", "filer", "s3", "admin")
        names += tuple(f"{n}.grpc" for n in names)
        self.ports = {name: free_port() for name in names}
        self.process: Child | None = None
        self.config = workdir / "s3.json"
        workdir.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "usagelog",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, secret: str | None = None) -> dict[str, str]:
        """What a worker needs to archive here: the AWS SDK's variables and the endpoint. No
        profile or instance role is ever looked up (the instance metadata address is no test's)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key if secret is None else secret,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials"),
            "USAGELOG_ARCHIVE_ENDPOINT": self.endpoint,
        }

    def storage_options(self) -> dict[str, Any]:
        return {"key": self.access_key, "secret": self.secret_key, "endpoint_url": self.endpoint}

    def start(self, timeout: float = 120) -> S3Server:
        p = self.ports
        args = [
            str(self.binary),
            "mini",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config}",
            "-webdav=false",
            "-admin.ui=false",  # the admin server runs all the same: on ports of its own
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin.grpc']}",
            "-admin.port.legacy=0",
            "-master.telemetry=false",  # no traffic off this machine
        ]
        (self.workdir / "data").mkdir(exist_ok=True)
        self.process = Child.start(args, log=self.workdir / "weed.log", name="weed mini", append=True)
        self.process.wait_until(self.ready, timeout, "the S3 gateway to answer", interval=0.5)
        return self

    def client(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(
            key=self.access_key,
            secret=self.secret_key,
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def ready(self) -> bool:
        """True once a bucket can be made and listed: the filer and a volume are up too."""
        try:
            fs = self.client()
            fs.makedirs("ready", exist_ok=True)
            fs.pipe("ready/probe", b"ok")
            return bool(fs.cat("ready/probe") == b"ok")
        except Exception:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)
            self.process = None

    def log(self) -> str:
        path = self.workdir / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""
