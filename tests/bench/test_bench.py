"""``uad bench``: recipes load with clear errors, and a tiny recipe runs end to end into a well-formed report.

Benchmarks are not tests: nothing here checks a number, only that the report is complete and well formed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from uad_plugins.cli.main import main

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROW_FIELDS = {"model", "model_ref", "reference", "data", "category", "backend", "precision", "status", "error",
              "quality", "latency", "gflops_per_s", "peak_fraction", "memory", "parameters", "flops_per_image",
              "training", "export"}
QUALITY_FIELDS = {"image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_F1Max", "image_AP", "image_Precision",
                  "image_Recall", "image_F1Score"}

#: random weights, 64 px, small dimensions, 1 epoch of 2 batches; Padim as the anomalib reference
TINY_RECIPE = {
    "name": "tiny",
    "models": [
        {"name": "pbas", "model": "plugin:pbas",
         "init_args": {"pretrained": False, "image_size": 64, "pretrain_embed_dimension": 64,
                       "target_embed_dimension": 64, "dsc_hidden": 32},
         "trainer": {"max_epochs": 1}, "fit": {"feature_cache": "memory"}},
        {"name": "padim", "model": "Padim", "reference": True, "image_size": 64,
         "init_args": {"backbone": "tf_efficientnet_lite0", "layers": ["blocks.1", "blocks.2"], "pre_trained": False,
                       "n_features": 32},
         "precisions": ["fp32"]},  # the INT8 path is covered by PBAS; one export less keeps the test short
    ],
    "data": [{"class_path": "UadDemo", "init_args": {"category": "washer", "num_workers": 0}}],
    "trainer": {"limit_train_batches": 2, "num_sanity_val_steps": 0},
    "precisions": ["fp32", "int8"],
    "batch_sizes": [1, 2],
    "timing": {"warmup": 1, "iterations": 2},
    "export": {"parity_samples": 8, "calibration_samples": 8, "max_metric_drop": 1.0, "timeout_s": 300},
    "seed": 0,
    "threads": 2,
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _is_png(path: Path) -> bool:
    from PIL import Image

    if path.read_bytes()[:8] != PNG_MAGIC:
        return False
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


SHIPPED_RECIPES = sorted(path.stem for path in (REPO / "configs" / "bench").glob("*.yaml"))


def test_the_usual_recipes_ship() -> None:
    assert {"pbas_bottle", "demo_quick", "unified_bottle", "pradot_hetnet_fader_bottle_ckpt", "mmae_ecg_mitbih",
            "hetnet_noise_ablation_bottle", "image_models_bsdata", "image_models_bottle", "fader_gates"} <= \
        set(SHIPPED_RECIPES)


@pytest.mark.parametrize("name", SHIPPED_RECIPES)
def test_shipped_recipes_load(name: str) -> None:
    from uad_plugins.bench.recipe import load_recipe

    recipe = load_recipe(REPO / "configs" / "bench" / f"{name}.yaml", cwd=REPO)
    assert recipe.models and recipe.data and recipe.iterations >= 1
    if name == "pbas_bottle":
        assert [m.reference for m in recipe.models] == [False, True, True]
        assert recipe.precisions == ("fp32", "fp16", "int8") and recipe.batch_sizes == (1, 8)
        assert recipe.data[0].init_args["root"] == str((REPO / "../shared/data/mvtec_ad_256").resolve())
        assert all("max_epochs" not in recipe.trainer_for(m) for m in recipe.models if m.reference)
    if name == "hetnet_noise_ablation_bottle":  # three HetNet variants, eager only
        assert [m.init_args.get("noise_args") for m in recipe.models] == [None, {"covariance": "identity"}, None]
        assert recipe.models[2].init_args["denoise_weight"] == 0.0 and recipe.precisions == ()
    if name == "image_models_bsdata":  # a Folder dataset is labelled by its name in rows and folders
        assert [(d.name, d.category) for d in recipe.data] == [("Folder", "bsdata_pitting")]
        assert {m.name for m in recipe.models} == {"padim", "patchcore", "pbas", "pradot", "hetnet", "uniad",
                                                   "onenip", "fader"}
    if name == "hetnet_ablation":  # Padim reference + 3 HetNet variants x noise on/off, two datasets, eager only
        assert [m.name for m in recipe.models] == ["padim", "hetnet", "hetnet_no_noise", "hetnet_cnn_only",
                                                   "hetnet_cnn_only_no_noise", "rd4ad", "rd4ad_noise"]
        assert recipe.models[0].reference and recipe.precisions == ()
        assert [(d.name, d.category) for d in recipe.data] == [("MVTecAD", "bottle"), ("Folder", "bsdata_pitting")]
        rows = {m.name: m.init_args for m in recipe.models[1:]}
        assert {n: (a["variant"], a.get("denoise_weight", 1.0) > 0) for n, a in rows.items()} == {
            "hetnet": ("hetnet", True), "hetnet_no_noise": ("hetnet", False), "hetnet_cnn_only": ("cnn_only", True),
            "hetnet_cnn_only_no_noise": ("cnn_only", False), "rd4ad": ("rd4ad", False),
            "rd4ad_noise": ("rd4ad", True)}
        from uad_plugins.plugins.hetnet.model import HetNet

        tiny = {"pretrained": False, "image_size": 64, "vit_layers": [1], "fusion_dim": 8, "embed_dim": 16}
        for args in rows.values():  # every row's settings are accepted (tiny sizes, random weights)
            HetNet(**{**args, **tiny})
    if name == "onenip_score_maps":  # one OneNIP fit per dataset scored with each of its three maps
        assert [(m.name, m.ckpt_from, m.overrides) for m in recipe.models] == [
            ("onenip", None, {}), ("onenip_refiner", "onenip", {"score_map": "refiner"}),
            ("onenip_reconstruction", "onenip", {"score_map": "reconstruction"})]
        from uad_plugins.plugins.onenip.torch_model import COMPONENT_MAPS

        assert {m.overrides["score_map"] for m in recipe.models[1:]} | {"fused"} == set(COMPONENT_MAPS)
    if name == "time_to_model":  # issue 15: each speed change beside the setting it replaces, in one run
        rows = {m.name: m for m in recipe.models}
        assert rows["pbas_1536"].init_args["target_embed_dimension"] == 1536
        assert rows["pbas"].init_args["target_embed_dimension"] == 1536  # the default again (chosen on validation)
        assert rows["pbas_sized"].init_args["target_embed_dimension"] is None  # the opt-in speed setting
        assert rows["pbas_768"].init_args["target_embed_dimension"] == 768  # the middle size, chosen on validation
        cached = {name for name, m in rows.items() if m.fit.get("feature_cache") == "memory"}
        assert cached == {"pbas", "pbas_sized", "pbas_768", "pbas_default", "pradot_cached", "pradot_default",
                          "hetnet_cached", "uniad_cached"}
        assert all("max_epochs" not in recipe.trainer_for(rows[n]) for n in ("pbas_default", "pradot_default"))
        assert all(recipe.trainer_for(m).get("max_epochs") == 3 for n, m in rows.items()
                   if n not in ("padim", "pbas_default", "pradot_default", "fader"))
        assert recipe.trainer_for(rows["fader"])["max_epochs"] == 3 + rows["fader"].init_args["fader_epochs"]
    if name == "fader_gates":  # one trained checkpoint per dataset, scored with FADeR's gates on and off
        fader, off = recipe.models
        assert fader.init_args["fader_epochs"] == 5 and not fader.trainer
        assert off.ckpt_from == "fader" and off.overrides == {"gates": False}
        assert [d.category for d in recipe.data] == ["bottle", "bsdata_pitting", "weave"]
    if name == "unified_bottle":  # benchmarked from the checkpoints of the bottle recipes
        assert all(m.ckpt_path and m.ckpt_path.endswith("latest/weights/lightning/model.ckpt") for m in recipe.models)


@pytest.mark.parametrize(("change", "expected"), [
    ({"precisions": ["fp32", "bf16"]}, "unknown precision 'bf16'"),
    ({"timing": {"warmup": 1, "iteration": 2}}, "Did you mean 'iterations'"),
    ({"models": []}, "'models' must be a non-empty list"),
    ({"batch_sizes": [1, 0]}, "must be an integer >= 1"),
    ({"models": [{"model": "plugin:pbas", "ckpt_path": "missing/model.ckpt"}]}, "does not exist"),
    ({"models": [{"model": "plugin:pbas", "ckpt_path": "m.ckpt", "init_args": {"image_size": 64}}]},
     "a checkpoint already fixes the model"),
    ({"models": [{"model": "plugin:fader", "overrides": {"gates": False}}]}, "'overrides' without a checkpoint"),
    ({"models": [{"model": "plugin:pbas", "fit": {"feature_cahce": "memory"}}]}, "Did you mean 'feature_cache'"),
    ({"models": [{"model": "plugin:pbas", "ckpt_path": "m.ckpt", "fit": {"feature_cache": "memory"}}]},
     "a checkpoint already fixes the model"),
    ({"models": [{"model": "plugin:pbas", "fit": {"feature_cache": "ram"}}]}, "feature_cache"),
    ({"models": [{"name": "a", "model": "plugin:fader", "ckpt_from": "b"}]}, "not an earlier model entry"),
    ({"models": [{"name": "a", "model": "plugin:pbas"}, {"name": "b", "model": "plugin:fader", "ckpt_from": "a"}]},
     "Give both entries the same 'model'"),
    ({"models": [{"name": "a", "model": "plugin:fader"},
                 {"name": "b", "model": "plugin:fader", "ckpt_from": "a", "overrides": {"gate": False}}]},
     "has no init argument 'gate'"),
    ({"models": [{"name": "a", "model": "plugin:fader"},
                 {"name": "b", "model": "plugin:fader", "ckpt_from": "a", "trainer": {"max_epochs": 1}}]},
     "Change a checkpoint model's init args with 'overrides'"),
])
def test_bad_recipe_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict,
                                      expected: str) -> None:
    recipe = _write(tmp_path / "bad.yaml", {**TINY_RECIPE, **change})
    code = main(["bench", "--recipe", str(recipe), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err
    assert not (tmp_path / "out").exists()


def test_ckpt_from_and_overrides_parse_and_seed_replaces_the_recipe_seed() -> None:
    from uad_plugins.bench.recipe import parse_recipe

    recipe = parse_recipe({**TINY_RECIPE, "models": [
        {"name": "fader", "model": "plugin:fader"},
        {"name": "fader_gates_off", "model": "plugin:fader", "ckpt_from": "fader", "overrides": {"gates": False},
         "precisions": []}]})
    off = recipe.models[1]
    assert off.ckpt_from == "fader" and off.overrides == {"gates": False} and off.ckpt_path is None
    assert recipe.with_seed(2).seed == 2 and recipe.with_seed(2).models == recipe.models


def test_a_bad_seed_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write(tmp_path / "r.yaml", TINY_RECIPE)
    code = main(["bench", "--recipe", str(recipe), "--seed", "-1", "--output", str(tmp_path / "out")])
    assert code == 2 and "--seed must be an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_models_selects_entries_and_the_checkpoints_they_need(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from uad_plugins.bench.recipe import parse_recipe

    recipe = parse_recipe({**TINY_RECIPE, "models": [
        {"name": "pbas", "model": "plugin:pbas"},
        {"name": "fader", "model": "plugin:fader"},
        {"name": "fader_gates_off", "model": "plugin:fader", "ckpt_from": "fader", "overrides": {"gates": False}}]})
    assert [m.name for m in recipe.with_models(["fader_gates_off"]).models] == ["fader", "fader_gates_off"]
    assert [m.name for m in recipe.with_models(["fader", "pbas"]).models] == ["pbas", "fader"]  # recipe order
    path = _write(tmp_path / "r.yaml", TINY_RECIPE)
    code = main(["bench", "--recipe", str(path), "--models", "nope", "--output", str(tmp_path / "out")])
    assert code == 2 and "has no model entry 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_data_selects_entries_by_name_or_category(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from uad_plugins.bench.recipe import parse_recipe

    recipe = parse_recipe({**TINY_RECIPE, "data": [
        {"class_path": "UadDemo", "init_args": {"category": "weave"}},
        {"class_path": "UadDemo", "init_args": {"category": "bottle"}},
        {"name": "third", "class_path": "UadDemo", "init_args": {"category": "grid"}}]})
    assert [d.category for d in recipe.with_data(["bottle"]).data] == ["bottle"]
    assert [d.category for d in recipe.with_data(["third", "weave"]).data] == ["weave", "grid"]  # recipe order
    path = _write(tmp_path / "r.yaml", TINY_RECIPE)
    code = main(["bench", "--recipe", str(path), "--data", "nope", "--output", str(tmp_path / "out")])
    assert code == 2 and "has no data entry 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_overrides_are_written_over_a_checkpoints_hyper_parameters(tmp_path: Path) -> None:
    import torch

    from uad_plugins.bench.runner import _checkpoint_with_overrides

    source = tmp_path / "model.ckpt"
    weights = {"model.w": torch.arange(3.0)}
    torch.save({"state_dict": weights, "hyper_parameters": {"gates": True, "lr": 0.1}, "uad": {"seed": 3}}, source)
    copy = _checkpoint_with_overrides(str(source), {"gates": False}, tmp_path / "out" / "model.ckpt")
    loaded = torch.load(copy, weights_only=True)
    assert loaded["hyper_parameters"] == {"gates": False, "lr": 0.1}
    assert loaded["uad"] == {"seed": 3} and torch.equal(loaded["state_dict"]["model.w"], weights["model.w"])
    assert torch.load(source, weights_only=True)["hyper_parameters"]["gates"] is True  # the source is untouched


def test_report_renders_without_running(tmp_path: Path) -> None:
    from uad_plugins.bench.report import write_report

    row = {"model": "m", "reference": False, "data": "D", "category": "c", "backend": "torch-eager",
           "status": "ok", "quality": {"image_AUROC": 0.9}, "latency": {"1": {"p50_ms": 2.0, "p95_ms": 3.0}},
           "memory": {}, "export": None}
    failed = {**row, "backend": "openvino-int8", "status": "error", "error": "boom\nsecond line",
              "quality": {}, "latency": {}}
    files = write_report({"recipe": {"name": "r", "batch_sizes": [1]}, "rows": [row, failed]}, tmp_path)
    text = files["markdown"].read_text(encoding="utf-8")
    assert "| m | D/c | torch-eager | 0.900 |" in text and "openvino-int8 (failed)" in text
    assert "boom second line" in text
    assert all(_is_png(tmp_path / name) for name in ("accuracy_vs_latency.png", "latency_by_backend.png"))


@pytest.mark.slow
def test_tiny_recipe_runs_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write(tmp_path / "tiny.yaml", TINY_RECIPE)
    out = tmp_path / "bench"
    code = main(["bench", "--recipe", str(recipe), "--output", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0, stdout[-3000:]
    assert "[bench] 1/2 pbas on UadDemo/washer: fitting" in stdout

    report = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert report["schema"] == "uad-bench/1" and report["complete"] is True
    fingerprint = report["fingerprint"]
    assert {"cpu", "cpu_flags", "cores_logical", "torch_threads", "openvino_inference_threads", "versions",
            "python", "platform", "date"} <= set(fingerprint)
    assert {"torch", "openvino", "nncf", "anomalib", "timm", "numpy", "uad_plugins"} <= set(fingerprint["versions"])
    assert report["matmul_peak"]["gflops_best"] > 0

    rows = report["rows"]
    assert [(r["model"], r["backend"]) for r in rows] == [
        ("pbas", "torch-eager"), ("pbas", "openvino-fp32"), ("pbas", "openvino-int8"),
        ("padim", "torch-eager"), ("padim", "openvino-fp32")]
    for row in rows:
        assert ROW_FIELDS <= set(row), ROW_FIELDS - set(row)
        assert set(row["quality"]) == QUALITY_FIELDS
        assert row["reference"] is (row["model"] == "padim")
        assert row["status"] in ("ok", "error")
        if row["status"] == "error":  # an export may fail (e.g. an INT8 crash); it must say why
            assert row["error"] and row["backend"] != "torch-eager"
            continue
        assert set(row["latency"]) == {"1", "2"}
        for timing in row["latency"].values():
            assert 0 < timing["p50_ms"] <= timing["p95_ms"] and timing["iterations"] == 2
            assert timing["throughput_ips"] > 0
        assert 0.0 <= row["quality"]["image_AUROC"] <= 1.0
        # the decisions at the threshold fitted on validation, for eager and OpenVINO rows alike (issue 12)
        assert all(0.0 <= row["quality"][k] <= 1.0 for k in ("image_Precision", "image_Recall", "image_F1Score")
                   if row["quality"][k] is not None)
        assert row["quality"]["image_Recall"] is not None
        assert row["memory"]["inference_peak_rss_mb"] > 0 and row["memory"]["fit_peak_rss_mb"] > 0
        assert row["flops_per_image"] > 0 and row["parameters"] > 0 and row["gflops_per_s"]["1"] > 0
        assert row["training"]["epochs"] == 1 and row["training"]["train_batches"] == 2
        if row["backend"] != "torch-eager":
            assert row["export"]["bundle_mb"] > 0 and row["export"]["parity"]["passed"] is True
            assert (out / "bundles").is_dir()
    ok = {(r["model"], r["backend"]) for r in rows if r["status"] == "ok"}
    assert {("pbas", "torch-eager"), ("pbas", "openvino-fp32"), ("padim", "torch-eager")} <= ok
    # a model entry's fit options reach the engine: PBAS trained from its feature cache (issue 15)
    assert rows[0]["training"]["fit_options"] == {"feature_cache": "memory"}
    assert rows[0]["training"]["feature_cache"]["hits"] > 0

    markdown = (out / "bench.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Benchmark: tiny")
    assert ("| model | data | backend | image AUROC | pixel AUROC | AUPRO | F1-max | P@thr | R@thr | F1@thr "
            "| time to model | p50 ms bs1 |") in markdown
    assert "| pbas | UadDemo/washer | openvino-fp32 |" in markdown
    assert "| padim (ref) | UadDemo/washer | torch-eager |" in markdown
    assert "| model | data | backend | epochs | batches | steps | fit s | params |" in markdown
    # time to model beside quality: fit seconds, optimiser steps, the fit's peak RSS
    fit = rows[0]
    assert (f"{fit['training']['fit_seconds']:.0f} s · {fit['training']['steps']} steps · "
            f"{fit['memory']['fit_peak_rss_mb'] / 1024:.1f} GB") in markdown
    for name in ("accuracy_vs_latency.png", "latency_by_backend.png"):
        assert _is_png(out / name), name

    # a trained checkpoint is benchmarked without training again, scores the same, and its export is gated on the
    # honest validation set rebuilt as the fit built it (never on the test split)
    ckpt = rows[0]["training"]["checkpoint"]
    again = _write(tmp_path / "again.yaml", {**TINY_RECIPE, "models": [
        {"name": "pbas_ckpt", "model": "plugin:pbas", "ckpt_path": ckpt, "precisions": ["fp32"]}]})
    code = main(["bench", "--recipe", str(again), "--output", str(tmp_path / "again")])
    stdout = capsys.readouterr().out
    assert code == 0, stdout[-3000:]
    assert "fitting" not in stdout and f"loaded {ckpt}" in stdout
    row, exported = json.loads((tmp_path / "again" / "bench.json").read_text(encoding="utf-8"))["rows"]
    assert row["status"] == "ok" and row["training"]["checkpoint"] == ckpt and row["training"]["epochs"] == 1
    assert row["training"]["validation_rebuilt"] == "synthetic" and exported["status"] == "ok", exported
    synthetic = list((tmp_path / "again" / "runs").rglob("validation/**/*.png"))
    assert synthetic, "the checkpoint's synthetic validation images were not rebuilt"
    assert row["quality"]["image_AUROC"] == pytest.approx(rows[0]["quality"]["image_AUROC"], abs=1e-6)


def test_compute_quality_ranks_raw_outputs_of_any_range() -> None:
    """Raw scores in the hundreds (Padim, UniAD) are ranked, not squashed by torchmetrics' sigmoid to 0.5."""
    from uad_plugins.bench.runner import compute_quality

    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20)
    scores = rng.normal(0, 1, 40) + labels * 1.5
    maps = np.zeros((40, 8, 8), np.float32) + scores[:, None, None]
    masks = np.zeros((40, 8, 8), bool)
    masks[20:, 2:6, 2:6] = True
    maps[masks] += 3.0
    small = compute_quality(scores, maps, labels, masks)
    large = compute_quality(400 + 100 * scores, 400 + 100 * maps, labels, masks)
    assert small["image_AUROC"] == pytest.approx(large["image_AUROC"], abs=1e-5)
    assert small["pixel_AUROC"] == pytest.approx(large["pixel_AUROC"], abs=1e-5)
    assert large["image_AUROC"] > 0.8


def test_a_checkpoint_row_whose_overrides_change_the_output_gets_thresholds_fitted_on_validation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a ``ckpt_from`` row with ``overrides`` (OneNIP's ``score_map``, FADeR's ``gates``) was tested with
    the thresholds its source had fitted for the other output, so its P/R/F1 at the threshold were meaningless (the
    OneNIP refiner row on bottle read F1 0.0 at a fused-map threshold). Now they are fitted again on the same honest
    validation split and stored in the copy the OpenVINO rows export; threshold-free metrics are unchanged."""
    import torch

    tiny = {"pretrained": False, "image_size": 64, "hidden_dim": 32, "num_heads": 4, "num_encoder_layers": 1,
            "num_decoder_layers": 1, "dim_feedforward": 64, "dropout": 0.0, "neighbor_size": 3,
            "refiner_width": 8, "prompt_bank_size": 4}
    recipe = _write(tmp_path / "maps.yaml", {
        **TINY_RECIPE, "name": "maps",
        "models": [{"name": "onenip", "model": "plugin:onenip", "init_args": tiny, "trainer": {"max_epochs": 1}},
                   {"name": "onenip_refiner", "model": "plugin:onenip", "ckpt_from": "onenip",
                    "overrides": {"score_map": "refiner"}}],
        "precisions": [], "batch_sizes": [1], "timing": {"warmup": 1, "iterations": 1}})
    out = tmp_path / "bench"
    code = main(["bench", "--recipe", str(recipe), "--output", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0, stdout[-3000:]
    assert "2/2 onenip_refiner on UadDemo/washer: fitting thresholds again on validation" in stdout
    fused, refiner = json.loads((out / "bench.json").read_text(encoding="utf-8"))["rows"]
    assert refiner["training"]["thresholds_refitted_on_validation"] is True
    # the same threshold-free metrics on raw outputs as the source row (validating first once left the model's
    # default anomalib evaluator in place: AUPRO, AP and F1-max were missing, pixel AUROC read normalised maps)
    assert set(refiner["quality"]) == set(fused["quality"])
    assert all(refiner["quality"][k] is not None for k, v in fused["quality"].items() if v is not None)
    assert refiner["quality"]["pixel_AUROC"] == pytest.approx(refiner["quality_resized_inputs"]["pixel_AUROC"],
                                                              abs=0.05)
    assert "thresholds_refitted_on_validation" not in fused["training"]

    source = torch.load(fused["training"]["checkpoint"], weights_only=True)["state_dict"]
    copy = torch.load(out / "checkpoints" / "onenip_refiner__UadDemo__washer" / "model.ckpt",
                      weights_only=True)["state_dict"]
    key = "post_processor._image_threshold"
    assert not torch.equal(source[key], copy[key])  # fitted for the refiner's map, not the fused one
    assert 0.0 <= float(copy[key]) <= 1.0  # the refiner's image scores are pooled probabilities
    weights = [k for k in source if k.startswith("model.")]
    assert weights and all(torch.equal(source[k], copy[k]) for k in weights)  # the weights are the source's
