"""A Hugging Face Hub imitation for tests, over real HTTPS (a certificate from the test CA),
answering exactly what corral's pull asks of the Hub, as the Hub answers it:

    hub, https://localhost:<port>
      GET  /v2/<repo>/manifests/<tag>         the registry endpoint (the Hub serves GGUF alone):
                                              400 "Repository is not GGUF or is not compatible
                                              with llama.cpp"; 401 {"error":"Invalid username or
                                              password."} for a repository it does not show
      GET  /api/models/<repo>[/revision/<r>]  {"id", "sha", "siblings": [{"rfilename"}], …};
                                              401/404 with X-Error-Code RepoNotFound,
                                              404 RevisionNotFound
      HEAD /<repo>/resolve/<sha>/<file>       a file in git: 200 with ETag "<git blob id>"; an
      GET                                     LFS file: 302 to the CDN with X-Linked-Etag
                                              "<sha256>", X-Linked-Size, X-Repo-Commit
    cdn, https://127.0.0.1:<other port>
      GET  /lfs/<sha256>?X-Amz-Signature=…    the bytes, ranged (206); refuses an Authorization
                                              header, as S3 refuses a second auth mechanism

(huggingface_hub's hf_api.model_info and file_download.get_hf_file_metadata make these requests;
the error headers are the ones its hf_raise_for_status reads.) A private repository is shown only
to `token`. Every request is recorded (`requests`); a test can make the CDN stall a response
after some bytes (`stall_after`) until `release` is set, to cut a pull mid-file.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from tests.remote import TestCA
from tests.watch import DEADLINE

NOT_GGUF = "Repository is not GGUF or is not compatible with llama.cpp"
HIDDEN = '{"error":"Invalid username or password."}'
SEND_BLOCK = 256 * 1024


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(name: str, data: bytes) -> bool:
    """As the Hub's default .gitattributes and its 10 MB rule for git files put it."""
    return name.endswith((".safetensors", ".bin", ".gguf", ".png")) or len(data) > 10 * 1024 * 1024


@dataclass
class Revision:
    sha: str
    files: dict[str, bytes]
    lies: dict[str, str] = field(default_factory=dict)  # file -> the sha256 its HEAD claims instead


@dataclass
class Repository:
    revisions: dict[str, Revision] = field(default_factory=dict)  # branch or tag -> revision
    default: str = "main"
    private: bool = False

    def at(self, revision: str | None) -> Revision | None:
        if revision is None:
            return self.revisions.get(self.default)
        by_commit = {r.sha: r for r in self.revisions.values()}
        return self.revisions.get(revision) or by_commit.get(revision)


@dataclass(frozen=True)
class Seen:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    authorization: bool
    range: str | None


class HubImitation:
    def __init__(self, ca: TestCA, token: str | None = None) -> None:
        self.ca = ca
        self.token = token
        self.repositories: dict[str, Repository] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 hex -> bytes, as the CDN keeps them
        self.requests: list[Seen] = []
        self.stall_after: int | None = None  # bytes of a CDN response before it waits for `release`
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self.hub_port = 0
        self.cdn_port = 0

    @property
    def host(self) -> str:
        """`localhost:<port>`: the host part of a model name on this Hub."""
        return f"localhost:{self.hub_port}"

    @property
    def endpoint(self) -> str:
        """HF_ENDPOINT for it."""
        return f"https://{self.host}"

    @property
    def cdn_host(self) -> str:
        return f"127.0.0.1:{self.cdn_port}"

    def add(
        self,
        repo_id: str,
        revision: str,
        files: dict[str, bytes],
        private: bool = False,
        lies: dict[str, str] | None = None,
    ) -> str:
        """Put `files` in `repo_id` at branch `revision` (a new commit); its sha."""
        repository = self.repositories.setdefault(repo_id, Repository(private=private))
        listing = "".join(f"{name}\0{git_blob_id(data)}\n" for name, data in sorted(files.items()))
        sha = hashlib.sha1(f"{repo_id}@{revision}\n{listing}".encode()).hexdigest()
        repository.revisions[revision] = Revision(sha, dict(files), dict(lies or {}))
        for data in files.values():
            self.blobs[hashlib.sha256(data).hexdigest()] = data
        return sha

    def seen(self, server: str, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.requests if s.server == server and method in (None, s.method)]

    def forget(self) -> None:
        with self._lock:
            self.requests.clear()

    def start(self) -> Self:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca.cert_file, self.ca.key_file)
        for server_name in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, server_name))
            server.daemon_threads = True
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
            server.handle_error = lambda request, address: None  # type: ignore[method-assign]
            threading.Thread(target=server.serve_forever, name=f"hub-{server_name}", daemon=True).start()
            self._servers.append(server)
        self.hub_port = self._servers[0].server_address[1]
        self.cdn_port = self._servers[1].server_address[1]
        return self

    def stop(self) -> None:
        self.release.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


_MANIFEST = re.compile(r"/v2/([^/]+/[^/]+)/manifests/([^/]+)")
_MODEL_API = re.compile(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?")
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")
_CDN = re.compile(r"/lfs/([0-9a-f]{64})")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _handler(hub: HubImitation, server_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            self.request.settimeout(DEADLINE)
            self.request.do_handshake()  # on this connection's thread, not the accepting one
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = urlsplit(self.path).path
            seen = Seen(
                server_name, self.command, path, "Authorization" in self.headers, self.headers["Range"]
            )
            with hub._lock:
                hub.requests.append(seen)
            if server_name == "cdn":
                self._cdn(path, body)
            elif match := _MANIFEST.fullmatch(path):
                self._registry(match.group(1))
            elif match := _MODEL_API.fullmatch(path):
                self._model_info(match.group(1), unquote(match.group(2)) if match.group(2) else None)
            elif match := _RESOLVE.fullmatch(path):
                self._resolve(match.group(1), match.group(2), unquote(match.group(3)), body)
            else:
                self._send(404, b"Not Found", {"Content-Type": "text/plain"})

        def _shown(self, repo_id: str) -> Repository | None:
            repository = hub.repositories.get(repo_id)
            if repository is None:
                return None
            if repository.private and self.headers.get("Authorization") != f"Bearer {hub.token}":
                return None
            return repository

        def _registry(self, repo_id: str) -> None:
            repository = hub.repositories.get(repo_id)
            if repository is None or repository.private:  # its registry takes no HF_TOKEN
                self._send(401, HIDDEN.encode(), {"Content-Type": "application/json"})
                return
            self._send(400, NOT_GGUF.encode(), {"Content-Type": "text/plain; charset=utf-8"})

        def _not_found(self, code: str, message: str) -> None:
            status = 404 if "Authorization" in self.headers or code != "RepoNotFound" else 401
            headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def _model_info(self, repo_id: str, revision: str | None) -> None:
            repository = self._shown(repo_id)
            if repository is None:
                self._not_found("RepoNotFound", "Repository not found")
                return
            found = repository.at(revision)
            if found is None:
                self._not_found("RevisionNotFound", "Invalid rev id: " + str(revision))
                return
            answer = {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "private": repository.private,
                "gated": False,
                "sha": found.sha,
                "library_name": "transformers",
                "tags": ["exl2", "safetensors"],
                "siblings": [{"rfilename": name} for name in sorted(found.files)],
            }
            self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

        def _resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
            repository = self._shown(repo_id)
            found = repository.at(revision) if repository else None
            if repository is None:
                self._not_found("RepoNotFound", "Repository not found")
                return
            if found is None:
                self._not_found("RevisionNotFound", "Invalid rev id: " + revision)
                return
            data = found.files.get(name)
            if data is None:
                self._not_found("EntryNotFound", "Entry not found")
                return
            common = {"X-Repo-Commit": found.sha, "Accept-Ranges": "bytes"}
            if not is_lfs(name, data):
                headers = {**common, "ETag": f'"{git_blob_id(data)}"', "Content-Type": "text/plain"}
                self._send(200, data if body else b"", headers, length=len(data))
                return
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
            location = f"https://{hub.cdn_host}/lfs/{sha256}?X-Amz-Signature=corral-tests"
            headers = {
                **common,
                "Location": location,
                "ETag": f'"{git_blob_id(pointer.encode())}"',
                "X-Linked-Etag": f'"{found.lies.get(name, sha256)}"',
                "X-Linked-Size": str(len(data)),
            }
            self._send(302, b"", headers)

        def _cdn(self, path: str, body: bool) -> None:
            match = _CDN.fullmatch(path)
            data = hub.blobs.get(match.group(1)) if match else None
            if "Authorization" in self.headers:
                self._send(400, b"Only one auth mechanism allowed", {"Content-Type": "text/plain"})
                return
            if data is None:
                self._send(404, b"NoSuchKey", {"Content-Type": "text/plain"})
                return
            start, stop, status = 0, len(data), 200
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            if (wanted := _RANGE.fullmatch(self.headers.get("Range", ""))) is not None:
                start = int(wanted.group(1))
                stop = min(int(wanted.group(2)) + 1 if wanted.group(2) else len(data), len(data))
                status = 206
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(stop - start)}.items():
                self.send_header(key, value)
            self.end_headers()
            if not body:
                return
            sent = 0
            for offset in range(start, stop, SEND_BLOCK):
                limit = hub.stall_after
                if limit is not None and sent >= limit:
                    hub.release.wait(DEADLINE)
                block = data[offset : min(offset + SEND_BLOCK, stop)]
                self.wfile.write(block)
                sent += len(block)

        def _send(self, status: int, data: bytes, headers: dict[str, str], length: int | None = None) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


# A model directory shaped as an EXL2 quantization of the bundled SmolLM2-135M-Instruct: its
# config.json (services/registry/describe.py hf_shape reads the numbers), a tokenizer and
# safetensors shards of the converter's names. Nothing runs it here; the bytes are its own.
SMOLLM2_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 576,
    "initializer_range": 0.041666666666666664,
    "intermediate_size": 1536,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "rms_norm_eps": 1e-05,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 49152,
}
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def safetensors_file(tensors: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    """A .safetensors file: an 8-byte little-endian header length, the JSON header (padded to 8
    bytes), then each tensor's bytes in order."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(data for _, _, data in tensors.values())


def exl2_shard(seed: int, layers: range, size: int) -> bytes:
    """A shard of about `size` bytes: each layer's quantized q_proj as exllamav2 names it."""
    per_layer = max(size // max(len(layers), 1) // 4 * 4, 4)
    tensors = {}
    for layer in layers:
        data = hashlib.shake_256(f"{seed}:{layer}".encode()).digest(per_layer)
        prefix = f"model.layers.{layer}.self_attn.q_proj"
        tensors[f"{prefix}.q_weight"] = (
            "I32",
            [per_layer // 4 // 576, 576],
            data[: per_layer // 4 // 576 * 2304],
        )
        tensors[f"{prefix}.q_invperm"] = ("I16", [576], bytes(1152))
    return safetensors_file(tensors)


def tokenizer_json() -> bytes:
    vocab = {
        "<|endoftext|>": 0,
        "<|im_start|>": 1,
        "<|im_end|>": 2,
        **{chr(97 + i): 3 + i for i in range(26)},
    }
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for t, i in list(vocab.items())[:3]
    ]  # fmt: skip
    document = {
        "version": "1.0",
        "added_tokens": added,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    }
    return json.dumps(document, indent=2).encode()


def exl2_repository(
    bits: float = 4.0, method: str = "exl2", shard_size: int = 2 * 1024 * 1024
) -> dict[str, bytes]:
    """An EXL2 (or EXL3) branch as turboderp's converter leaves it, with the Hub's extras."""
    config = {
        **SMOLLM2_CONFIG,
        "quantization_config": {"quant_method": method, "version": "0.2.9", "bits": bits, "head_bits": 6},
    }
    return {
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": json.dumps({"bos_token_id": 1, "eos_token_id": 2}).encode(),
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": json.dumps(
            {"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>"}
        ).encode(),
        "special_tokens_map.json": json.dumps({"eos_token": "<|im_end|>"}).encode(),
        "output-00001-of-00002.safetensors": exl2_shard(int(bits * 10), range(0, 15), shard_size),
        "output-00002-of-00002.safetensors": exl2_shard(int(bits * 10), range(15, 30), shard_size),
        # left on the Hub:
        "README.md": b"# SmolLM2-135M-Instruct EXL2\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "measurement.json": json.dumps({"measurement": {}}).encode(),
        "cover.png": b"\x89PNG\r\n\x1a\n" + bytes(64),
    }
