"""Scale-out scoring of exported bundles on an external engine (Ray Data): the edge runtime, one compiled model per
worker. ``ray`` is optional (``pip install 'uad_plugins[ray]'``) and imported only when a function needs it.

    from uad_plugins.scale import score_folder_with_ray
    rows = score_folder_with_ray("RUN/bundle_fp32", ["shots/"], num_actors=2, output="scores.jsonl")
"""

from uad_plugins.scale.ray_infer import COLUMNS, BundleScorer, score_folder_with_ray, scoring_dataset

__all__ = ["COLUMNS", "BundleScorer", "score_folder_with_ray", "scoring_dataset"]
