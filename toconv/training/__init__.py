"""Training: the accelerate loop around :mod:`toconv.objective`, its data, checkpoints and logs."""
