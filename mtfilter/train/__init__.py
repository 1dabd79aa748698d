"""Training with Lightning: the LightningModule (`module`: the training step), the data module
(`data`), the training settings (`config`), a step's gradients (`objective`), each stacked
replica's learning rate (`replica_rates`), the epoch's running totals (`epoch_totals`), the DDP
gradient average (`distributed`), the callbacks, checkpoint compatibility and state
(`checkpoint_compat`, `checkpoint_state`), the CPU thread choice (`threads`) and Lightning's
notices that do not apply here (`lightning_notices`)."""
