"""`bench run`: sample a generator and score it, streaming, resumable, sharded across processes.

    plan.py         which label and seed each sample index gets (pure functions of the run seed)
    shards.py       the run folder: finished shards' features on disk, config fingerprints, resume
    dist.py         torchrun process groups and the end-of-run gather onto rank 0
    references.py   known reference batches (`--ref imagenet256`) and the resolution check
    score.py        ADM's five numbers from the features a run already has
    loop.py         the sample -> resize -> Inception -> shard loop, result.json, and the CLI commands
    reconstruct.py  `--task reconstruct`: rFID, PSNR and SSIM of a tokenizer
"""
