"""Training engine on detectron2: optimizer, schedule, trainer, launch."""
