"""Model registry: ``build_model(name, input_shape, num_classes)``; built-in models live in
``fedloom.models.zoo`` and are declared in ``fedloom.builtins``."""
