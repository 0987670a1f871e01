"""Data stages of the pipeline: download -> image shards -> latent shards -> training loader.

One concept per module (the command lines of the stages are in ``workflow/scripts/``). The stage modules
(``download``, ``datasets``, ``shards``, ``latents``) re-export the public names of the modules they are built
from, so their import paths stay as they were.

Downloads and raw datasets:

* :mod:`ucgm_core.data.remote`    -- :class:`~ucgm_core.data.remote.RemoteFile`, its mirrors and safe file names.
* :mod:`ucgm_core.data.checksums` -- sha256/md5 of downloads, verification, first-seen records.
* :mod:`ucgm_core.data.download`  -- mirrored, resumable, bounded transfers (:func:`~ucgm_core.data.download.fetch`).
* :mod:`ucgm_core.data.extract`   -- safe extraction of tar and zip archives.
* :mod:`ucgm_core.data.sources`   -- image sources: what every dataset reader returns.
* :mod:`ucgm_core.data.readers`   -- readers of the raw formats (IDX, CIFAR-10, ImageFolder, ILSVRC tar).
* :mod:`ucgm_core.data.datasets`  -- the catalogue of dataset specs.

Shards:

* :mod:`ucgm_core.data.tarcodec`  -- the tar and npy codec (why not webdataset's writer: its docstring).
* :mod:`ucgm_core.data.manifest`  -- shard manifests (v2: count, sha256, size per shard) and checked reading.
* :mod:`ucgm_core.data.parts`     -- dividing a split among K jobs; part manifests.
* :mod:`ucgm_core.data.imageprep` -- the ADM center crop.
* :mod:`ucgm_core.data.shards`    -- the image shards stage: building (whole or in parts), merging, reading.

Latents:

* :mod:`ucgm_core.data.latent_encode`     -- encoding image shards (plain + flipped), whole or in parts.
* :mod:`ucgm_core.data.latent_provenance` -- the fingerprint of what made the latents; per-shard records.
* :mod:`ucgm_core.data.latent_reader`     -- the checked latent manifest and latents.
* :mod:`ucgm_core.data.latent_stats`      -- per-channel statistics: compute, save, load, check.
* :mod:`ucgm_core.data.latents`           -- the latents stage and the merge of parts.
* :mod:`ucgm_core.data.loader`            -- the resumable in-memory training loader over latent shards.
"""
