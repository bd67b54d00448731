"""Bundles are tamper-evident and confined: a sealed manifest (manifest_sha256), model.xml/model.bin/parity.json
listed and verified, `files` keys that never leave the bundle, a manifest that must be a JSON object with sane input
dims agreeing with the graph, and temporary folders of killed exports removed by the next export.

One real tiny PBAS export (OpenVINO, no mocks); each test edits a copy of it. Edits that target a check behind the
manifest checksum re-seal the manifest as a forger would, so that the check under test is the one that fires.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

torch.set_num_threads(2)
pytestmark = pytest.mark.slow

#: paths opened while a test records them (an audit hook sees every open(), io.open and os.open)
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle, inside tmp_path/bundles/ (so tmp_path/outside is outside it)."""
    return Path(shutil.copytree(bundle, tmp_path / "bundles" / "b"))


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


def _rewrite(root: Path, change: Callable[[dict[str, Any]], Any], *, reseal: bool = True) -> None:
    """Edit the manifest; ``reseal`` recomputes manifest_sha256, as someone who knows the format would."""
    from uad_edge.manifest import seal_manifest

    manifest = _manifest(root)
    change(manifest)
    if reseal:
        manifest = seal_manifest(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _demo_image() -> Path:
    from uad_plugins.data import default_demo_root

    return sorted((default_demo_root() / "washer" / "test").rglob("*.png"))[0]


def _dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_export_writes_a_sealed_format_2_manifest(bundle: Path) -> None:
    from uad_edge import load_bundle, read_manifest
    from uad_edge.manifest import DIGEST_KEY, manifest_digest
    from uad_edge.tempdirs import OWNER_MARKER

    manifest = _manifest(bundle)
    assert manifest["format_version"] == 2
    assert manifest[DIGEST_KEY] == manifest_digest(manifest)
    assert set(manifest["files"]) == {"model.xml", "model.bin", "parity.json"}
    assert not (bundle / OWNER_MARKER).exists()
    assert read_manifest(bundle) == manifest
    edge = load_bundle(bundle, expected_manifest_sha256=manifest[DIGEST_KEY])
    assert edge.predict(np.zeros((2, 3, 64, 64), np.float32)).pred_score.shape == (2,)


def test_tampered_model_bin_is_refused(copy: Path) -> None:
    from uad_edge import EdgeError, load_bundle

    size = (copy / "model.bin").stat().st_size
    _flip_byte(copy / "model.bin")
    assert (copy / "model.bin").stat().st_size == size
    with pytest.raises(EdgeError, match=r"model\.bin is corrupt"):
        load_bundle(copy)


@pytest.mark.parametrize("name", ["model.xml", "model.bin", "parity.json"])
def test_files_must_list_the_model_and_parity(copy: Path, name: str) -> None:
    from uad_edge import EdgeError, load_bundle

    _rewrite(copy, lambda m: m["files"].pop(name))
    if name != "parity.json":
        _flip_byte(copy / name)  # unlisted, it would otherwise never be checked
    with pytest.raises(EdgeError, match=rf"'files' does not list {name}"):
        load_bundle(copy)


@pytest.mark.parametrize("key", ["../../outside", "ABSOLUTE", "/etc/passwd", "sub/../../../outside",
                                 "..\\..\\outside", "./model.bin", "", "model.bin/", "link.bin"])
def test_files_keys_never_leave_the_bundle(copy: Path, tmp_path: Path, key: str) -> None:
    """Each key names a file whose hash matches (a forger's best case); it is still refused, and never opened."""
    global _OPENED
    from uad_edge import EdgeError, read_manifest

    outside = tmp_path / "outside"
    outside.write_bytes(b"secret outside the bundle\n")
    if key == "ABSOLUTE":
        key = str(outside)
    if key == "/etc/passwd":
        if not Path(key).is_file():
            pytest.skip("no /etc/passwd here")
        outside = Path(key)
    if key == "link.bin":
        (copy / "link.bin").symlink_to(outside)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    _rewrite(copy, lambda m: m["files"].__setitem__(key, digest))
    _OPENED = []
    try:
        with pytest.raises(EdgeError) as info:
            read_manifest(copy)
        opened = list(_OPENED)
    finally:
        _OPENED = None
    message = str(info.value)
    assert (repr(key) in message and "not a plain relative path" in message) or \
        (key == "link.bin" and "symbolic link" in message), message
    assert any(p.endswith("manifest.json") for p in opened), opened  # the hook sees what is opened
    assert str(outside) not in opened and not any(p.endswith("outside") for p in opened), opened


def test_edited_manifest_is_refused(copy: Path, bundle: Path) -> None:
    from uad_edge import EdgeError, load_bundle, read_manifest

    _rewrite(copy, lambda m: m["postprocessing"].__setitem__("image_threshold", 0.0), reseal=False)
    with pytest.raises(EdgeError, match="does not match its manifest_sha256"):
        load_bundle(copy)
    # one byte of the raw file: the precision
    text = (bundle / "manifest.json").read_text(encoding="utf-8")
    assert '"precision": "fp32"' in text
    (copy / "manifest.json").write_text(text.replace('"precision": "fp32"', '"precision": "fp36"'), encoding="utf-8")
    with pytest.raises(EdgeError, match="does not match its manifest_sha256"):
        read_manifest(copy)
    # a duplicate key (parsers disagree on which one wins) is refused outright
    (copy / "manifest.json").write_text(text.replace('"precision": "fp32"', '"precision": "fp32", "precision": "x"'),
                                        encoding="utf-8")
    with pytest.raises(EdgeError, match="duplicate key 'precision'"):
        read_manifest(copy)
    # whitespace is not content: the checksum covers the parsed manifest
    (copy / "manifest.json").write_text(json.dumps(json.loads(text), indent=7), encoding="utf-8")
    assert read_manifest(copy) == json.loads(text)


def test_resealed_manifest_fails_a_pinned_checksum(copy: Path, bundle: Path) -> None:
    """manifest_sha256 alone is tamper-evidence (a forger can recompute it); pinning the exported value is not."""
    from uad_edge import EdgeError, load_bundle, read_manifest

    pinned = _manifest(bundle)["manifest_sha256"]
    _rewrite(copy, lambda m: m["postprocessing"].__setitem__("image_threshold", 0.0))
    assert read_manifest(copy)["postprocessing"]["image_threshold"] == 0.0  # resealed: self-consistent
    with pytest.raises(EdgeError, match="not the expected"):
        load_bundle(copy, expected_manifest_sha256=pinned)


def test_format_1_bundles_load_only_unverified(copy: Path) -> None:
    """Version 1 has no manifest checksum: a verified load refuses it (else deleting manifest_sha256 and writing
    format_version 1 would bypass the check); verify=False still reads it."""
    from uad_edge import EdgeError, EdgeModel, load_bundle

    def downgrade(m: dict[str, Any]) -> None:
        m["format_version"] = 1
        del m["manifest_sha256"]

    _rewrite(copy, downgrade, reseal=False)
    with pytest.raises(EdgeError, match=r"format version 1.*cannot be verified") as info:
        load_bundle(copy)
    assert "Export it again" in str(info.value)
    edge = EdgeModel(copy, verify=False)
    assert edge.predict(np.zeros((1, 3, 64, 64), np.float32)).pred_score.shape == (1,)


@pytest.mark.parametrize("text", ["[1, 2, 3]", "42", '"uad-bundle"', "null", "{not json", '{"a": [[[[', "\xff"])
@pytest.mark.parametrize("verify", [True, False])
def test_manifest_must_be_a_json_object(copy: Path, text: str, verify: bool) -> None:
    from uad_edge import EdgeError, EdgeModel

    (copy / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(EdgeError, match=r"not an object|not valid JSON"):
        EdgeModel(copy, verify=verify)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("height", 10**9, r"input\.height is 1000000000; image bundles take an integer from 1 to 16384"),
    ("width", 0, r"input\.width is 0"),
    ("height", 64.0, r"input\.height is 64\.0"),
    ("height", "64", r"input\.height is '64'"),
    ("width", True, r"input\.width is True"),
    ("channels", 4, r"input\.channels is 4"),
    ("dynamic_batch", "yes", r"dynamic_batch is 'yes'"),
])
def test_absurd_input_is_refused_before_reading_the_model(copy: Path, monkeypatch: pytest.MonkeyPatch, field: str,
                                                          value: Any, match: str) -> None:
    import openvino

    from uad_edge import EdgeError, EdgeModel

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was read before the manifest was checked")

    monkeypatch.setattr(openvino, "Core", no_model)
    _rewrite(copy, lambda m: m["input"].__setitem__(field, value))
    for verify in (True, False):
        with pytest.raises(EdgeError, match=match):
            EdgeModel(copy, verify=verify)


def test_signal_bounds(copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import openvino

    from uad_edge import EdgeError, EdgeModel

    monkeypatch.setattr(openvino, "Core", None)
    for spec, match in (({"leads": 2000, "length": 64}, r"input\.leads is 2000"),
                        ({"leads": 1, "length": 10**8}, r"input\.length is 100000000"),
                        ({"leads": 1024, "length": 10**7}, "more than 268435456 points")):
        _rewrite(copy, lambda m, spec=spec: (m.__setitem__("modality", "signal"), m.__setitem__("input", spec)))
        with pytest.raises(EdgeError, match=match):
            EdgeModel(copy)


@pytest.mark.parametrize(("change", "said"), [
    ({"height": 32}, r"\[N, 3, 32, 64\]"),
    ({"width": 128}, r"\[N, 3, 64, 128\]"),
    ({"dynamic_batch": False}, r"\[1, 3, 64, 64\]"),
])
def test_input_disagreeing_with_the_graph_is_refused(copy: Path, change: dict[str, Any], said: str) -> None:
    from uad_edge import EdgeError, load_bundle

    _rewrite(copy, lambda m: m["input"].update(change))
    with pytest.raises(EdgeError, match=rf"manifest\.json says the input is {said} but model\.xml takes "
                                        r"\[\?,3,64,64\]"):
        load_bundle(copy)


def test_cli_infer_on_tampered_bundles_exits_2(bundle: Path, tmp_path: Path) -> None:
    tampered = {"model_bin": lambda root: _flip_byte(root / "model.bin"),
                "threshold": lambda root: _rewrite(root, lambda m: m["postprocessing"].__setitem__(
                    "image_threshold", -1.0), reseal=False),
                "outside": lambda root: _rewrite(root, lambda m: m["files"].__setitem__("../x", "0" * 64))}
    expected = {"model_bin": "model.bin is corrupt", "threshold": "does not match its manifest_sha256",
                "outside": "'../x'"}
    for name, tamper in tampered.items():
        root = Path(shutil.copytree(bundle, tmp_path / name))
        tamper(root)
        out = tmp_path / f"out_{name}"
        proc = subprocess.run([sys.executable, "-m", "uad_plugins.cli.main", "infer", str(root), str(_demo_image()),
                               "--output", str(out), "--resize"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (name, proc.stderr)
        assert proc.stderr.startswith("error: ") and expected[name] in proc.stderr, (name, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
        assert not out.exists() and not list(tmp_path.glob(f".out_{name}*"))


def test_stale_temp_folder_of_a_killed_process_is_removed(tmp_path: Path) -> None:
    from uad_edge.tempdirs import OWNER_MARKER, remove_stale_tempdirs

    prefix = ".fp32."
    code = textwrap.dedent(f"""
        import sys, time
        from uad_edge.tempdirs import make_owned_tempdir
        print(make_owned_tempdir({prefix!r}, {str(tmp_path)!r}), flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        killed = Path(proc.stdout.readline().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert killed.parent == tmp_path and killed.name.startswith(prefix) and (killed / OWNER_MARKER).is_file()
    (killed / "model.bin").write_bytes(b"half written")

    def folder(name: str, owner: Any = None) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "keep.txt").write_text("not ours to delete")
        if owner is not None:
            (path / OWNER_MARKER).write_text(json.dumps(owner))
        return path

    host = socket.gethostname()
    kept = [folder(".fp32.unmarked"), folder(".fp32.alive", {"pid": os.getppid(), "host": host}),
            folder(".fp32.mine", {"pid": os.getpid(), "host": host}),
            folder(".fp32.elsewhere", {"pid": _dead_pid(), "host": host + "-other"}),
            folder(".fp32.garbled", {"pid": "1", "host": host}), folder(".fp32.zero", {"pid": 0, "host": host}),
            folder(".other.dead", {"pid": _dead_pid(), "host": host})]
    linked = tmp_path / ".fp32.link"
    linked.symlink_to(kept[0])
    (tmp_path / ".fp32.file").write_text(json.dumps({"pid": _dead_pid(), "host": host}))
    assert remove_stale_tempdirs(tmp_path, prefix) == [killed]
    assert not killed.exists()
    assert all((path / "keep.txt").is_file() for path in kept) and linked.is_symlink()
    assert (tmp_path / ".fp32.file").is_file()


def test_export_removes_stale_temp_folders(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uad_edge.tempdirs import OWNER_MARKER
    from uad_plugins.cli.main import main

    outputs, scratch = tmp_path / "out", tmp_path / "tmp"
    outputs.mkdir()
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    owner = json.dumps({"pid": _dead_pid(), "host": socket.gethostname()})
    stale = [outputs / ".fp32.ab12cd", scratch / "uad_export_ab12cd"]
    kept = [outputs / ".fp32.mine", scratch / "uad_export_mine"]
    for path in stale + kept:
        path.mkdir()
        (path / "x").write_text("x")
    for path in stale:
        (path / OWNER_MARKER).write_text(owner)
    assert main(["export", "--ckpt_path", str(checkpoint), "--output", str(outputs / "fp32")]) == 0
    assert not any(path.exists() for path in stale)
    assert all((path / "x").is_file() for path in kept)
    assert sorted(p.name for p in outputs.iterdir()) == [".fp32.mine", "fp32"]
    assert sorted(p.name for p in scratch.iterdir()) == ["uad_export_mine"]  # ours was removed on exit
