"""`hal0 model import`: models other tools downloaded, registered where they are and served."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.env import HAL0, hal0_env, manifest
from tests.helpers.serve import sdk, serving, setup_home

pytestmark = pytest.mark.slow


def stores(home: Path) -> dict[str, Path]:
    """An Ollama store, a Hugging Face hub cache and an LM Studio folder, laid out as those tools do."""
    m = manifest()["models"]
    chat = Path(m["tiny-chat"]).read_bytes()
    digest = hashlib.sha256(chat).hexdigest()
    ollama = home / ".ollama/models"
    (ollama / "blobs").mkdir(parents=True)
    (ollama / "blobs" / f"sha256-{digest}").write_bytes(chat)
    manifest_file = ollama / "manifests/registry.ollama.ai/library/tiny/latest"
    manifest_file.parent.mkdir(parents=True)
    manifest_file.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 10},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(chat)}]}))
    hub = home / ".cache/huggingface/hub/models--acme--embed-GGUF"
    (hub / "blobs").mkdir(parents=True)
    blob = hub / "blobs" / hashlib.sha256(b"embed").hexdigest()
    shutil.copyfile(m["tiny-embed"], blob)
    snap = hub / "snapshots/abc123"
    snap.mkdir(parents=True)
    (snap / "tiny-embed.gguf").symlink_to(Path("../../blobs") / blob.name)
    lms = home / ".lmstudio/models/pub/rerank-GGUF"
    lms.mkdir(parents=True)
    shutil.copyfile(m["tiny-rerank"], lms / "tiny-rerank.gguf")
    (lms / "mmproj-tiny.gguf").write_bytes(b"GGUF")  # a projector: not a model of its own
    (lms / "notes.gguf").write_text("not a model")
    return {"ollama": ollama, "hub": snap, "lmstudio": lms}


def test_scan_registers_every_store_and_the_models_serve(tmp_path: Path) -> None:
    user = tmp_path / "user"
    found = stores(user)
    home = tmp_path / "hal0"
    m = manifest()
    setup_home(home, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    token = (home / "etc/admin.token").read_text().strip()
    with serving(home) as s:
        env = hal0_env(home, HAL0_URL=s.url, HOME=str(user))

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*HAL0, "model", "import", *args], env=env, capture_output=True, text=True,
                                  timeout=60)
        r = cli("--scan", "--json")
        assert r.returncode == 0, r.stderr
        got = {e["id"]: e for e in json.loads(r.stdout)}
        assert set(got) == {"ollama:tiny:latest", "tiny-embed", "tiny-rerank"}
        assert got["ollama:tiny:latest"]["source"] == "ollama:registry.ollama.ai/library/tiny:latest"
        assert got["tiny-embed"]["source"] == "hf-cache:acme/embed-GGUF/tiny-embed.gguf@abc123"
        assert [got[i]["capabilities"] for i in ("ollama:tiny:latest", "tiny-embed", "tiny-rerank")] == [
            ["chat"], ["embed"], ["rerank"]]
        assert Path(got["tiny-embed"]["path"]) == found["hub"] / "tiny-embed.gguf"  # where it is, not a copy
        assert cli("--scan").stdout.strip() == "nothing new to import"
        r = cli(str(found["lmstudio"] / "tiny-rerank.gguf"), "--as", "again")
        assert r.stdout.strip() == "nothing new to import"  # the same file under another id: no
        status, slot = s.post("/api/slots/primary/swap", token, {"model": "ollama:tiny:latest"})
        assert status == 200 and slot["model"] == "ollama:tiny:latest"
        with sdk(s, token) as client:
            out = client.chat.completions.create(model="ollama:tiny:latest", max_tokens=3,
                                                 messages=[{"role": "user", "content": "hi"}])
        assert out.usage is not None and out.usage.completion_tokens == 3
        assert s.stop() == 0
