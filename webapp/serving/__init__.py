"""Serving the model to the app: the lock, the LoRA slot registry, the streaming decode engine and the facade.

    errors.py   BASE and VersionLoadError (torch-free: the tabs import them)
    protocol.py Models: what Services needs from the served model (torch-free)
    lock.py     TurnLock: registry changes first, then prefills, then decode steps take turns
    slots.py    LoRA versions in PEFT adapter slots: copy into a free slot, inject a new one, select one
    engine.py   one thread decoding every request in one batch (continuous batching)
    service.py  ModelService: the facade the app and the tabs use
"""
