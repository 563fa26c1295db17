"""Hugging Face repositories as corral pulls them: names, the registry answers that send a pull to
the Hub API, the files kept, what the Hub's headers say of a file, the manifest's config."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from services.config import load_settings
from services.registry.hub import (
    FileMeta,
    HubRepo,
    HubSettings,
    falls_back,
    file_meta,
    git_blob_sha1,
    hub_repo,
    manifest_config,
    missing_files,
    parse_etag,
    wanted_files,
)
from services.registry.names import parse_name

SHA256 = hashlib.sha256(b"weights").hexdigest()
SHA1 = git_blob_sha1(b"{}\n")
PRIVATE_HUB = HubSettings(endpoint="https://hub.example.com:8443")

REPOS = [
    ("hf.co/turboderp/Llama-3.1-8B-Instruct-exl2:4.0bpw", HubSettings(),
     HubRepo("https://huggingface.co", "turboderp/Llama-3.1-8B-Instruct-exl2", "4.0bpw")),
    ("huggingface.co/turboderp/Llama-3.1-8B-Instruct-exl2:6.5bpw_h8", HubSettings(),
     HubRepo("https://huggingface.co", "turboderp/Llama-3.1-8B-Instruct-exl2", "6.5bpw_h8")),
    ("HF.CO/user/repo", HubSettings(), HubRepo("https://huggingface.co", "user/repo", None)),
    ("hf.co/user/repo:" + "a" * 40, HubSettings(), HubRepo("https://huggingface.co", "user/repo", "a" * 40)),
    ("hf.co/user/repo:main", PRIVATE_HUB, HubRepo("https://hub.example.com:8443", "user/repo", "main")),
    ("hub.example.com:8443/user/repo:v1", PRIVATE_HUB,
     HubRepo("https://hub.example.com:8443", "user/repo", "v1")),
    ("hub.example.com/user/repo:v1", PRIVATE_HUB, None),  # another port: another host
    ("registry.ollama.ai/library/llama3:8b", HubSettings(), None),
    ("llama3", PRIVATE_HUB, None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "hub", "repo"), REPOS, ids=[r[0] for r in REPOS])
def test_which_names_are_hub_repositories(text: str, hub: HubSettings, repo: HubRepo | None) -> None:
    assert hub_repo(parse_name(text), hub) == repo


@pytest.mark.parametrize(
    ("environ", "settings"),
    [
        ({}, HubSettings()),
        (
            {"HF_ENDPOINT": "https://hf-mirror.com/", "HF_TOKEN": " hf_x "},
            HubSettings("https://hf-mirror.com", "hf_x"),
        ),
        ({"HF_ENDPOINT": "", "HF_TOKEN": ""}, HubSettings()),
    ],
    ids=["unset", "set", "empty"],
)
def test_settings_from_huggingface_hubs_variables(environ: dict[str, str], settings: HubSettings) -> None:
    loaded = load_settings(environ)
    assert HubSettings.of(loaded.hf_endpoint, loaded.hf_token) == settings
    assert loaded.summary()["hf_token"] == ("***" if settings.token else "")  # never in the log


FALLBACKS = [
    (400, "400: Repository is not GGUF or is not compatible with llama.cpp", True),
    (400, "400: The specified tag is not available in the repository. Please use another tag or"
     ' "latest"', False),
    (401, "unauthorized: access denied", True),  # a private repository, or none: the API tells
    (404, "file does not exist", True),
    (429, '429: {"error":"We had to rate limit your IP"}', False),
    (500, "500: Internal Server Error", False),
    (None, 'Get "https://hf.co/v2/u/r/manifests/latest": proxyconnect tcp: refused', False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "message", "expected"), FALLBACKS, ids=[f"{f[0]}-{f[1][:30]}" for f in FALLBACKS]
)
def test_which_registry_answers_send_the_pull_to_the_hub_api(
    status: int | None, message: str, expected: bool
) -> None:
    assert falls_back(status, message) is expected


def test_only_the_files_an_engine_reads_are_kept() -> None:
    listing = [
        ".gitattributes",
        "README.md",
        "config.json",
        "generation_config.json",
        "measurement.json",
        "model.safetensors.index.json",
        "output-00001-of-00002.safetensors",
        "output-00002-of-00002.safetensors",
        "quantization_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "chat_template.jinja",
        "added_tokens.json",
        "pytorch_model.bin",
        "model-q4_k_m.gguf",
        "cover.png",
        "original/consolidated.safetensors",  # a subdirectory: no name the wire takes
        ".hidden.safetensors",
        "original/config.json",
    ]
    assert wanted_files(listing) == [
        "added_tokens.json",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "output-00001-of-00002.safetensors",
        "output-00002-of-00002.safetensors",
        "quantization_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
    ]


@pytest.mark.parametrize(
    ("names", "missing"),
    [
        (["config.json", "tokenizer.json", "output.safetensors"], []),
        (["config.json", "tokenizer.json"], ["*.safetensors"]),
        (["output.safetensors", "tokenizer.model"], ["config.json", "tokenizer.json"]),
        ([], ["config.json", "tokenizer.json", "*.safetensors"]),
    ],
    ids=["complete", "no-weights", "sentencepiece-only", "empty"],
)
def test_a_model_directory_needs_config_tokenizer_and_weights(names: list[str], missing: list[str]) -> None:
    assert missing_files(names) == missing


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (f'"{SHA256}"', SHA256),
        (f'W/"{SHA1}"', SHA1),
        (SHA256.upper(), SHA256),
        ('""', None),
        (None, None),
    ],
    ids=["strong", "weak", "unquoted", "empty", "absent"],
)
def test_etags_as_the_hub_writes_them(value: str | None, parsed: str | None) -> None:
    assert parse_etag(value) == parsed


POINTER_ETAG = git_blob_sha1(b"version https://git-lfs.github.com/spec/v1\n")
HEADS = [
    ("lfs", {"X-Linked-Etag": f'"{SHA256}"', "X-Linked-Size": "7", "ETag": f'"{POINTER_ETAG}"',
             "Content-Length": "0", "Location": "https://cdn/x"},
     FileMeta("f", 7, sha256=f"sha256:{SHA256}")),
    ("git", {"ETag": f'"{SHA1}"', "Content-Length": "3"}, FileMeta("f", 3, git_sha1=SHA1)),
    ("weak-git", {"etag": f'W/"{SHA1}"', "content-length": "3"}, FileMeta("f", 3, git_sha1=SHA1)),
    ("sha256-etag-served-directly", {"ETag": f'"{SHA256}"', "Content-Length": "7"},
     FileMeta("f", 7, sha256=f"sha256:{SHA256}")),
]  # fmt: skip


@pytest.mark.parametrize(("headers", "meta"), [h[1:] for h in HEADS], ids=[h[0] for h in HEADS])
def test_what_a_head_of_a_file_says(headers: dict[str, str], meta: FileMeta) -> None:
    assert file_meta("f", headers) == meta


@pytest.mark.parametrize(
    "headers",
    [
        {"ETag": '"not-a-hash"', "Content-Length": "3"},
        {"X-Linked-Etag": f'"{SHA1}"', "X-Linked-Size": "3"},  # a linked file must name its sha256
        {"ETag": f'"{SHA1}"'},  # no size
        {"Content-Length": "3"},  # no hash
    ],
    ids=["other-etag", "linked-sha1", "no-size", "no-etag"],
)
def test_a_file_the_hub_does_not_identify_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"^f: "):
        file_meta("f", headers)


def test_git_blob_ids_are_gits() -> None:
    done = subprocess.run(
        ["git", "hash-object", "--stdin"], input=b"hello\n", capture_output=True, check=True
    )
    assert (
        git_blob_sha1(b"hello\n")
        == done.stdout.decode().strip()
        == "ce013625030ba8dba906f756967f9e9ca394464a"
    )


CONFIGS = [
    ("exl2", {"model_type": "llama", "quantization_config": {"quant_method": "exl2", "bits": 4.0}},
     {"model_format": "exl2", "model_family": "llama", "model_families": ["llama"], "file_type": "4.0bpw"}),
    ("exl3", {"model_type": "qwen3", "quantization_config": {"quant_method": "EXL3", "bits": 3.25}},
     {"model_format": "exl3", "model_family": "qwen3", "model_families": ["qwen3"], "file_type": "3.25bpw"}),
    ("text-config", {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text"}},
     {"model_format": "exl2", "model_family": "gemma3_text", "model_families": ["gemma3_text"],
      "file_type": ""}),
    ("bare", {}, {"model_format": "exl2", "model_family": "", "file_type": ""}),
]  # fmt: skip


@pytest.mark.parametrize(("config", "described"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_the_manifest_config_of_a_model_directory(
    config: dict[str, object], described: dict[str, object]
) -> None:
    assert manifest_config(config) == described
