# Same jobs as ./dev.sh, for those who use `just` (the logic lives in dev.sh).
demo *ARGS:
    ./dev.sh demo {{ARGS}}

test *ARGS:
    ./dev.sh test {{ARGS}}

setup:
    ./dev.sh setup
