"""rnnjax's private engine: the cells, the scan kernel, the hand-written BPTT
and the layers. Import the public names from `rnnjax` instead; paths under
``rnnjax._src`` may change without notice."""
