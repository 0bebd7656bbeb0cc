"""`method: sft`'s builder: tokenizer, dialogue (and FIM) rows, model and Trainer for supervised fine-tuning."""

from __future__ import annotations


def build_sft(cfg, run_dir, resume, callbacks=None):
    """Tokenizer, data, model and Trainer for SFT; bad input fails here, before any step."""
    from starchat.templates import end_token_id
    from starchat.train.data import collator, ensure_dataset, prepare_data
    from starchat.train.fim import fim_callbacks, prepare_fim
    from starchat.train.model import apply_lora, load_model, load_tokenizer, new_token_ids, resolve_model_path
    from starchat.train.trainer import _trainer_class, check_context, training_arguments

    model_path = resolve_model_path(cfg.model)
    check_context(cfg, model_path)  # before data.from_code builds a dataset for a run that cannot start
    ensure_dataset(cfg.data)
    tokenizer = load_tokenizer(cfg.model, model_path)
    fim_spec, fim_new_ids = prepare_fim(cfg, tokenizer)  # after the dialogue tokens, before the model's resize
    data = prepare_data(cfg.data, tokenizer, cfg.model.template, fim_spec=fim_spec)
    # The arguments first: under DeepSpeed ZeRO-3 they switch on sharded loading (and gathered resizing).
    args = training_arguments(cfg, run_dir, has_eval=data.eval is not None)
    model = load_model(cfg.model, model_path, tokenizer, use_cpu=cfg.training.use_cpu)
    if cfg.lora.enabled:
        model = apply_lora(
            model, cfg.lora, tokenizer, cfg.model.template, quantized=cfg.model.load_in_4bit, extra_ids=fim_new_ids
        )
    trainer_cls, marker = _trainer_class()
    metrics = {}
    if data.eval is not None:
        from starchat.train.new_tokens import end_token_logits_to_argmax, end_token_metrics

        metrics = dict(
            compute_metrics=end_token_metrics(end_token_id(tokenizer, cfg.model.template)),
            preprocess_logits_for_metrics=end_token_logits_to_argmax,
        )
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator(cfg.data, tokenizer),
        processing_class=tokenizer,
        callbacks=[*fim_callbacks(fim_spec), marker(), *(callbacks or [])],
        **metrics,
    )
    trainer.new_token_rows = (
        new_token_ids(tokenizer, cfg.model.template) + fim_new_ids,
        cfg.training.new_token_lr_multiplier,
    )
    trainer.fim_spec = fim_spec
    return trainer, tokenizer, data.stats, resume
