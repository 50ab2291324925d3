"""A small Hub-compatible HTTP server for tests, on 127.0.0.1, speaking what `huggingface_hub` and transformers use.

Endpoints (model repos only): create repo, repo info, preupload, commit (NDJSON), tree listing, README metadata
validation (`upload_folder` and `RepoCard.validate` call it) and `/{repo}/resolve/{revision}/{path}` downloads with
the `X-Repo-Commit` / `ETag` headers `hf_hub_download` needs.
Every file is a regular git blob (preupload answers `uploadMode: regular`), so neither LFS nor Xet transfers are
involved, whichever upload path the installed `huggingface_hub` takes. Writes, and reads of private repos, need
`Authorization: Bearer <token>`. Every request is recorded (method, path, headers, body) so that tests can check
where the token went.

Use the `hub_server` fixture (it points `huggingface_hub`, transformers and subprocesses at the server), or
`with HubServer(token=...) as server:` directly.
"""

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from huggingface_hub import ModelCard


USER = "test-user"
TOKEN = "hf_testTokenThatMustNeverBeStored0123456789"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, which the Hub returns as a file's `oid` (and regular files' ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> files at that commit
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    history: list[tuple[str, str]] = field(default_factory=list)  # (commit sha, message), oldest first

    def resolve(self, revision: str) -> str | None:
        return self.branches.get(revision) or (revision if revision in self.commits else None)


class HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.commit = status, message, error_code, commit


class HubServer:
    """In-memory Hub on 127.0.0.1 (free port), served from a daemon thread that stops after `lifetime` seconds."""

    def __init__(self, token: str = TOKEN, lifetime: float = 300.0):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        # Bounded: a test that forgets to stop the server does not leave it running.
        self._deadline = threading.Timer(lifetime, self.stop)
        self._deadline.daemon = True

    def __enter__(self) -> "HubServer":
        self._thread.start()
        self._deadline.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def stop(self):
        self._deadline.cancel()
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of `repo_id` at `revision` (a branch or a commit sha; path -> content)."""
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.resolve(revision)])

    # ------------------------------------------------------------------------------------------------------------
    # request handling (called from the handler threads, under the lock)

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        url = urlsplit(raw_path)
        parts = [unquote(part) for part in url.path.strip("/").split("/")]
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        authorized = headers.get("authorization") == f"Bearer {self.token}"
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body), authorized)
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(body))
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = self._repo("/".join(parts[2:4]), authorized)
            action, rest = (parts[4], parts[5:]) if len(parts) > 4 else ("info", [])
            if action == "info" and method == "GET":
                return self._info(repo, "main")
            if action == "revision" and method == "GET" and rest:
                return self._info(repo, "/".join(rest))
            if action == "tree" and method == "GET" and rest:
                return self._tree(repo, rest[0], "/".join(rest[1:]), query.get("recursive") in ("True", "true", "1"))
            if action in ("preupload", "commit") and method == "POST" and rest:
                if not authorized:
                    raise HubError(HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header")
                if query.get("create_pr"):
                    raise HubError(HTTPStatus.BAD_REQUEST, "This test server does not support pull requests.")
                handler = self._preupload if action == "preupload" else self._commit
                return handler(repo, "/".join(rest), body)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._repo("/".join(parts[:2]), authorized)
            return self._resolve(repo, parts[3], "/".join(parts[4:]), method)
        raise HubError(HTTPStatus.NOT_FOUND, f"{method} {url.path} is not served by the test Hub.")

    def _repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(HTTPStatus.NOT_FOUND, "Repository not found", "RepoNotFound")
        return repo

    def _create_repo(self, payload: dict, authorized: bool):
        if not authorized:
            raise HubError(HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header")
        if payload.get("type", "model") != "model":
            raise HubError(HTTPStatus.BAD_REQUEST, "This test server only hosts model repos.")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self.repos:  # the Hub names the existing repo, which `create_repo(exist_ok=True)` returns
            return _json(HTTPStatus.CONFLICT, {"error": "You already created this model repo", "url": url})
        private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
        repo = self.repos[repo_id] = Repo(repo_id, private)
        self._new_commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        return _json(HTTPStatus.OK, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict):
        """Checks a README's metadata as strictly as `huggingface_hub` parses it (the Hub's own rules are wider)."""
        if payload.get("repoType", "model") != "model":
            raise HubError(HTTPStatus.BAD_REQUEST, "This test server only validates model cards.")
        try:
            card = ModelCard(payload["content"], ignore_metadata_errors=False)
        except ValueError as error:
            return _json(HTTPStatus.BAD_REQUEST, {"errors": [{"message": str(error)}]})
        warnings = [] if card.data.to_dict() else [{"message": "Empty or missing yaml metadata in repo card"}]
        return _json(HTTPStatus.OK, {"errors": [], "warnings": warnings})

    def _commit_sha(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _new_commit(self, repo: Repo, branch: str, files: dict[str, bytes], message: str) -> str:
        sha = hashlib.sha1(f"{repo.repo_id}:{len(repo.commits)}".encode()).hexdigest()
        repo.commits[sha] = files
        repo.branches[branch] = sha
        repo.history.append((sha, message))
        return sha

    def _info(self, repo: Repo, revision: str):
        sha = self._commit_sha(repo, revision)
        siblings = [{"rfilename": path} for path in sorted(repo.commits[sha])]
        return _json(HTTPStatus.OK, {"id": repo.repo_id, "sha": sha, "private": repo.private, "siblings": siblings})

    def _tree(self, repo: Repo, revision: str, folder: str, recursive: bool):
        files = repo.commits[self._commit_sha(repo, revision)]
        prefix = f"{folder.strip('/')}/" if folder else ""
        entries, folders = [], set()
        for path in sorted(p for p in files if p.startswith(prefix)):
            relative = path[len(prefix) :].split("/")
            for depth in range(1, len(relative) if recursive else min(len(relative), 2)):
                folders.add(prefix + "/".join(relative[:depth]))
            if recursive or len(relative) == 1:
                content = files[path]
                entries.append({"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)})
        if prefix and not entries and not folders:
            raise HubError(HTTPStatus.NOT_FOUND, f"{folder} does not exist", "EntryNotFound")
        entries += [{"type": "directory", "path": path, "oid": git_blob_sha1(path.encode())} for path in folders]
        return _json(HTTPStatus.OK, entries)

    def _preupload(self, repo: Repo, revision: str, body: bytes):
        sha = self._commit_sha(repo, revision)
        files = repo.commits[sha]
        answer = [
            {
                "path": item["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha1(files[item["path"]]) if item["path"] in files else None,
            }
            for item in json.loads(body)["files"]
        ]
        return _json(HTTPStatus.OK, {"files": answer, "commitOid": sha})

    def _commit(self, repo: Repo, revision: str, body: bytes):
        if revision not in repo.branches:
            raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {revision}", "RevisionNotFound")
        files = dict(repo.commits[repo.branches[revision]])
        message = ""
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(HTTPStatus.BAD_REQUEST, f"Unsupported encoding for {value['path']}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {path: content for path, content in files.items() if not path.startswith(folder)}
            else:
                raise HubError(
                    HTTPStatus.BAD_REQUEST, f"Unsupported commit operation {key!r} (all files are regular)."
                )
        sha = self._new_commit(repo, revision, files, message)
        url = f"{self.endpoint}/{repo.repo_id}/commit/{sha}"
        return _json(HTTPStatus.OK, {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None, "success": True})

    def _resolve(self, repo: Repo, revision: str, path: str, method: str):
        sha = self._commit_sha(repo, revision)
        files = repo.commits[sha]
        if path not in files:
            raise HubError(HTTPStatus.NOT_FOUND, "Entry not found", "EntryNotFound", sha)
        content = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(content)}"', "Content-Length": str(len(content))}
        return HTTPStatus.OK, headers, content if method == "GET" else b""


def _json(status: int, payload) -> tuple[int, dict, bytes]:
    body = json.dumps(payload).encode()
    return status, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body


def _make_handler(server: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {key.lower(): value for key, value in self.headers.items()}
            with server._lock:
                server.requests.append(RecordedRequest(self.command, self.path, headers, body))
                try:
                    status, reply_headers, reply = server.handle(self.command, self.path, headers, body)
                except HubError as error:
                    status, reply_headers, reply = _json(error.status, {"error": error.message})
                    reply_headers["X-Error-Message"] = error.message
                    if error.error_code:
                        reply_headers["X-Error-Code"] = error.error_code
                    if error.commit:  # lets hf_hub_download cache the absence of a file
                        reply_headers["X-Repo-Commit"] = error.commit
            self.send_response(status)
            for key, value in reply_headers.items():
                self.send_header(key, value)
            if "Content-Length" not in reply_headers:
                self.send_header("Content-Length", "0")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format, *args):
            pass  # the request log is `server.requests`

    return Handler


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    """A running `HubServer`; `huggingface_hub`, transformers and subprocesses inheriting `os.environ` use it.

    Offline mode is lifted for this test only, and HF_HOME is a fresh folder (empty cache, no stored token).
    """
    from huggingface_hub import constants
    from transformers.utils import hub as transformers_hub

    with HubServer() as server:
        hf_home = tmp_path / "hf_home"
        environment = {
            "HF_ENDPOINT": server.endpoint,
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_PROXY": "127.0.0.1",
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE"):
            monkeypatch.delenv(name, raising=False)
        # huggingface_hub reads its settings at import time, and transformers keeps one HfApi (with its endpoint):
        # patch the live values so that calls made in this process reach the server too.
        patched = {
            "ENDPOINT": server.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_OFFLINE": False,
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_TOKEN_PATH": str(hf_home / "token"),
            "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        }
        for name, value in patched.items():
            monkeypatch.setattr(constants, name, value)
        monkeypatch.setattr(transformers_hub, "_hf_api", None)
        yield server
