"""Fine-tuning with MRO's rewards: reject sampling and RL (MRO-RL and the GRPO family),
their objectives, rollouts and settings."""
