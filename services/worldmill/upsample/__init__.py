"""The upsample service: prompt upsampling with a vision-language model that never overflows its context.

Pure core (no I/O): ``profiles`` (how each upsampling model resizes an image and counts its
tokens, plus its sampling defaults and system prompt) and ``budget`` (how many hint frames, at
what size, fit the model's context next to the prompt and the reply; the next smaller attempt
after a context-length error; the calibration learned from the server's reported usage).
"""
