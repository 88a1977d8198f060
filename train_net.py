"""Train and evaluate the SAM-prompted region captioner (SCA) with Hydra configuration.

    python train_net.py                                   # demo: two mixed sources, tiny model on CPU, ~3 minutes
    python train_net.py data=demo model=tiny solver.max_iter=200
    python train_net.py model=sam_vit_h_gpt2_large data=... solver.max_iter=100000
    python train_net.py eval_only=true model.weights=output/demo_mix-tiny/model_final.pth
    python train_net.py resume=true                       # continue from the last checkpoint
    python train_net.py data=demo                         # the demo shapes alone (one source)
    python train_net.py dist.num_gpus=2                   # 2 DDP processes (NCCL on GPUs, gloo on CPU)
    torchrun --nproc_per_node=2 train_net.py              # the same under torchrun
"""

import hydra
from omegaconf import DictConfig

import sca  # noqa: F401  (applies the detectron2 compatibility layer first)
from sca.config import register_configs
from sca.engine.launch import launch_from_config

register_configs()


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    launch_from_config(cfg)


if __name__ == "__main__":
    main()
