"""Prompt-to-Prompt attention control (Hertz et al., "Prompt-to-Prompt Image Editing with Cross
Attention Control", ICLR 2023), the one implementation every P2P-based editor here shares
(ddim_p2p, nti_p2p, npi_p2p, direct_inversion_p2p, icd).

It is installed through ``unet.set_attn_processor`` (never by patching module classes); layers it
does not modify keep their processor (diffusers' fused-SDPA ``AttnProcessor2_0``). Nothing is tied to
SD1.x sizes: the token count comes from the tokenizer, the layer places/resolutions from the UNet's
block structure, the blend-map size from the latent at run time.

API
---
Build one controller per (source, target) edit::

    from editors.p2p import P2PController

    ctrl = P2PController.from_prompts(
        tokenizer, source_prompt, target_prompt,
        num_steps=50,                     # any count: iCD uses 4
        mode="refine",                    # "refine" | "replace" (same word count) | "auto"
        cross_replace_steps=0.4,          # fraction, (start, end), or {"default_": f, word: f}
        self_replace_steps=0.6,           # fraction or (start, end)
        blend_words=(("cat",), ("dog",)), # LocalBlend words (source, target), or None
        equalizer={"dog": 2.0},           # target-word re-weighting, or None (or a float[T] tensor)
        blend_start=0.2, blend_threshold=0.3,
        source_row=-2, target_row=-1,     # UNet batch rows of the source / target conditional branch
    )

Drive it from any sampling loop, with any batch layout (e.g. ``[∅src, ∅tgt, c_src, c_tgt]`` for CFG,
``[c_src, c_tgt]`` without, iCD's ``[∅, ∅, src, tgt]`` with a w-embedding UNet)::

    with ctrl.attach(unet):                     # installs processors, restores the originals on exit
        for i, t in enumerate(timesteps):
            ctrl.begin_step(i)                  # selects the cross/self schedules for this step
            eps = unet(latent_batch, t, encoder_hidden_states=context).sample
            latents = scheduler_step(...)       # latents: (2, C, h, w) = [source, target]
            latents = ctrl.after_step(latents)  # LocalBlend (rows 0/1 by default: source_row=, target_row=)

Several edits in one UNet batch (``--batch-size``): give controller ``j`` of ``B`` the rows
``source_row=2*j - 2*B, target_row=2*j - 2*B + 1`` and drive them together; each edits only its rows::

    batch = P2PBatch(controllers)               # attach / begin_step / after_step as above
    latents = batch.after_step(latents)         # latents: (2B, C, h, w) = [src_1, tgt_1, src_2, ...]

Semantics (``google/prompt-to-prompt`` and PIE-Bench's vendored copy): only the target conditional row
is modified. Cross-attention: for steps ``i < int(cross * (num_steps + 1))`` the target's probabilities
become ``mapped(source) * equalizer`` (Refine keeps the target's own probabilities for tokens with no
source counterpart). Self-attention: for steps ``int(s0 * num_steps) <= i < int(s1 * num_steps)``, in
layers at half the latent resolution or coarser (SD1.x: ≤32² tokens), the target uses the source's
probabilities. LocalBlend: the running sum over steps of the (edited) blend-word cross-attention in the
coarsest down/up cross-attention layers (SD1.x: the five 16² layers) is max-pooled 3×3, resized to
the latent, divided by its maximum and thresholded; the target is then ``src + mask·(tgt − src)``
after every step with ``i + 1 > int(blend_start * num_steps)``.

Helpers: ``controller.blend_mask(hw)``, ``controller.last_mask``, ``controller.describe()`` (extras for
EditOutput), ``controller.installed`` (layers with a P2P processor), ``align.*`` (token alignment).
"""
from editors.p2p.align import choose_mode, refinement_mapper, replacement_mapper, word_token_indices
from editors.p2p.controller import P2PAttnProcessor, P2PBatch, P2PController
from editors.p2p.layers import AttnLayer, attention_layers, blend_layers

__all__ = ["P2PController", "P2PBatch", "P2PAttnProcessor", "AttnLayer", "attention_layers", "blend_layers", "choose_mode",
           "refinement_mapper", "replacement_mapper", "word_token_indices"]
