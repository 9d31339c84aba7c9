"""What training adds: TRL GRPOTrainer glue (trainer), the reward functions (rewards) and the GPU memory a
step needs (memory)."""
