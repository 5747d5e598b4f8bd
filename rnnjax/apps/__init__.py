"""Applications built on rnnjax's public API: the character-level language
model and its training loop, long-range experiments, reports, visualisation,
data, checkpoints and the ``rnnjax`` command.

They need optax, tqdm, matplotlib and flax, which the core does not; nothing
in the core imports from here.
"""
