"""The upsample service: prompt upsampling with a vision-language model that never overflows its context.

tests/test_docs.py checks that the list below names every module of the package, and only those.

Modules:
    profiles     how each upsampling model resizes an image and counts its tokens, its defaults (pure)
    budget       how many hint frames, at what size, fit the context; shrink; calibrate (pure)
    request      the chat request and its cache key (pure)
    answer       the model's answer cleaned and judged (pure)
    structured   Cosmos 3's structured JSON captions: the ask and the check (pure)
    hints        hint frames made at the planned size (local files only: PyAV, Pillow)
    upsampler    one upsample end to end against one server
    service      queue rewrites, run them, record and announce them
    settings     the runtime settings plus the upsampling server and how requests are sized
    api          HTTP routes
    cli          ``worldmill upsample``
    app          the service process
"""
