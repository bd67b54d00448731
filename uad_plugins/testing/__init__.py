"""Testing helpers for plugin authors: the contract checks, also available as pytest fixtures.

    from uad_plugins.testing import run_model_contract
    def test_contract(tmp_path):
        run_model_contract("plugin:example", tmp_path)
"""

from uad_plugins.testing.contract import (
    ContractReport,
    check_export_contract,
    make_synthetic_image_dataset,
    run_metric_contract,
    run_model_contract,
    run_synthesizer_contract,
)

__all__ = ["ContractReport", "check_export_contract", "make_synthetic_image_dataset", "run_metric_contract",
           "run_model_contract", "run_synthesizer_contract"]
