"""Model code that training and serving share: loading, generation, chat formatting, the tiny model, model errors."""
