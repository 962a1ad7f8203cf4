# Familiar entry points; all logic lives in `cargo xtask` (see xtask/).
.PHONY: dev watch test rebuild-runner smoke status logs stop bench

dev:
	cargo xtask dev

watch:
	cargo xtask dev --watch

test:
	cargo xtask ci

rebuild-runner:
	cargo xtask rebuild-runner

smoke:
	cargo xtask smoke

status:
	cargo xtask status

logs:
	cargo xtask logs --follow

stop:
	cargo xtask stop

bench:
	cargo xtask bench
