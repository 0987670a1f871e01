"""Data stages of the pipeline: download -> image shards -> latent shards -> training loader.

Modules (the command lines of the stages are in ``workflow/scripts/`` and, for now, in ``shards`` and
``latents``):

* :mod:`ucgm_core.data.download` -- mirrored, resumable, checksum-verified downloads; safe extraction.
* :mod:`ucgm_core.data.datasets` -- the catalogue of dataset specs and their raw-format readers.
* :mod:`ucgm_core.data.shards`   -- webdataset tar shards of images (+ ADM center crop) and a reader.
* :mod:`ucgm_core.data.latents`  -- autoencoder encoding of image shards (plain + flipped), statistics.
* :mod:`ucgm_core.data.loader`   -- the resumable in-memory training loader over latent shards.
"""
