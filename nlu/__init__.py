"""Understanding what people write: safety rules now, a trained model later."""
