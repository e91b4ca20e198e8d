"""What runs inside each torchrun rank: the entry, the Trainer, the TrainSpec, metrics, faults, the CPU layer."""
