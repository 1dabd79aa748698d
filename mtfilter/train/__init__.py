"""Training with Lightning: the LightningModule (`module`: the training step), the data module
(`data`), the multitask gradients (`task_gradients`, `multitask`), each stacked replica's
learning rate (`replica_rates`), the epoch's running totals (`epoch_totals`), the DDP gradient
average (`distributed`), the callbacks, checkpoint compatibility (`checkpoint_compat`), the CPU
thread choice (`threads`) and Lightning's notices that do not apply here (`lightning_notices`)."""
