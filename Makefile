# Familiar entry points; all logic lives in `cargo xtask` (see xtask/).
.PHONY: dev test rebuild-runner smoke status logs stop

dev:
	cargo xtask dev

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
