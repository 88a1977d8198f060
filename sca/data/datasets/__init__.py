"""Dataset registration: importing this package registers every source (lazily: nothing is read).

Real datasets are looked up under ``$DETECTRON2_DATASETS`` (default ``./datasets``), as in detectron2.
"""

import os

from sca.data.datasets.register_ade20k_panoptic import register_all_ade20k_panoptic
from sca.data.datasets.register_coco_panoptic import register_all_coco_panoptic
from sca.data.datasets.register_demo import register_all_demo
from sca.data.datasets.register_demo_refs import register_all_demo_refs
from sca.data.datasets.register_objects365 import register_all_objects365
from sca.data.datasets.register_refcoco import register_all_refcoco
from sca.data.datasets.register_v3det import register_all_v3det
from sca.data.datasets.register_vg import register_all_vg

register_all_demo()
_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_all_coco_panoptic(_root)
register_all_ade20k_panoptic(_root)
register_all_demo_refs()
register_all_objects365(_root)
register_all_v3det(_root)
register_all_refcoco(_root)
register_all_vg(_root)
