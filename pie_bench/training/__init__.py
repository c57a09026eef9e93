"""Training scripts for the ShapesEdit models (may import core, editors, datasets and metrics).

``shapes_train`` is the command line; the recipe is ``shapes_config``; training data ``shapes_data``; the
checkpointed loop ``shapes_loop``; the stages ``shapes_autoencoder``, ``shapes_diffusion`` (SD and IP2P
UNets) and ``shapes_clip``; ``shapes_export`` writes the folders and manifest, ``shapes_sampling``
generates from an exported model, and ``shapes_evaluate`` measures it."""
