"""Registers the ``pradot`` model."""

from uad_plugins import ModelSpec, hookimpl


@hookimpl
def uad_register_models():
    return ModelSpec(
        name="pradot",
        target="uad_plugins.plugins.pradot.model:Pradot",
        summary="PRADOT: per-position prototypes fitted by entropic optimal transport (no gradients, frozen backbone).",
        config="uad_plugins.plugins.pradot:config.yaml",
        # tiny settings for the contract test: random ResNet18 weights, 64 px (4x4 grid), 2 prototypes per position
        test_config={"backbone": "resnet18", "layers": ["layer3"], "pretrained": False, "image_size": 64,
                     "num_prototypes": 2, "num_iterations": 20},
        tags=("image", "exportable"),
        paper="Trombetta & Lartizien, Learning local and global prototypes with optimal transport for unsupervised "
              "anomaly detection and localization, LSD workshop @ ECML 2025 (arXiv 2508.12927)",
        homepage="https://github.com/robintrmbtt/pradot",
        license="no license file (original code); independent implementation",
    )
