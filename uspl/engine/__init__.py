"The training loop: progress, checkpoints, resume, seeds, distributed training, run folders."
