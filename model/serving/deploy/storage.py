"""Files of local and Cloud Storage (gs://) model folders: read, write, and copy a local folder up.

Deploying reads and writes with the caller's own credentials and project (the google-cloud-storage
client), so a permission problem becomes one `error:` line that names the role to grant.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from model.serving.deploy.errors import DeployError


def _split_gcs(uri: str) -> tuple[str, str]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


class Storage:
    """Read, write and copy files of local folders and gs:// folders (google-cloud-storage client)."""

    def __init__(self, project: str, credentials: Any) -> None:
        self._project = project
        self._credentials = credentials
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            self._client = storage.Client(project=self._project, credentials=self._credentials)
        return self._client

    def read(self, path: str) -> bytes | None:
        if not path.startswith("gs://"):
            return Path(path).read_bytes() if Path(path).is_file() else None
        from google.api_core.exceptions import NotFound

        bucket, name = _split_gcs(path)
        with self._errors(f"reading {path}"):
            try:
                return self.client.bucket(bucket).blob(name).download_as_bytes()
            except NotFound:
                return None

    def write(self, path: str, data: bytes, content_type: str = "application/json") -> None:
        if not path.startswith("gs://"):
            Path(path).write_bytes(data)
            return
        bucket, name = _split_gcs(path)
        with self._errors(f"writing {path}"):
            self.client.bucket(bucket).blob(name).upload_from_string(data, content_type=content_type)

    def exists(self, path: str) -> bool:
        if not path.startswith("gs://"):
            return Path(path).exists()
        bucket, name = _split_gcs(path)
        with self._errors(f"reading {path}"):
            return any(True for _ in self.client.list_blobs(bucket, prefix=name, max_results=1))

    def upload(self, local: str, destination: str, report: Callable[[str], None]) -> int:
        """Copy a local file or folder to a gs:// path; returns the number of files."""
        source = Path(local)
        bucket_name, prefix = _split_gcs(destination)
        if source.is_file():
            pairs = [(source, prefix)]
        else:
            files = sorted(p for p in source.rglob("*") if p.is_file())
            pairs = [(p, posixpath.join(prefix, p.relative_to(source).as_posix())) for p in files]
        with self._errors(f"copying {local} to {destination}"):
            bucket = self.client.bucket(bucket_name)
            for path, name in pairs:
                bucket.blob(name).upload_from_filename(str(path))
        report(f"Copied {len(pairs)} file(s) of {local} to {destination}")
        return len(pairs)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        from google.api_core import exceptions as api

        try:
            yield
        except (api.Forbidden, api.Unauthorized, api.NotFound) as e:
            raise DeployError(
                f"Cloud Storage refused {doing}: {getattr(e, 'message', e)}. The bucket must exist and the "
                "credentials need access to it (e.g. Storage Object Admin, roles/storage.objectAdmin).",
                1,
            ) from None
        except (api.GoogleAPIError, OSError) as e:  # incl. RetryError once the client's retries ran out
            raise DeployError(
                f"Cloud Storage failed {doing}: {getattr(e, 'message', None) or e}", 1
            ) from None
