# Sourced by the training launchers after _env.sh: RECIPE=NAME reads configs/recipes/NAME.env (or RECIPE=PATH
# a file of that format): one VAR=value per line, comments after #. A variable already set in the environment
# wins over the file, so every choice of a recipe can be changed on the command line.
load_recipe() {
    [ -z "${RECIPE:-}" ] && return 0
    local file="$REPO_ROOT/configs/recipes/$RECIPE.env"
    [ -f "$RECIPE" ] && file=$RECIPE
    if [ ! -f "$file" ]; then
        local known
        known=$(cd "$REPO_ROOT/configs/recipes" && ls -- *.env 2>/dev/null | sed 's/\.env$//' | tr '\n' ' ')
        echo "error: unknown RECIPE=$RECIPE: no configs/recipes/$RECIPE.env and no such file; recipes: ${known:-none}" >&2
        exit 2
    fi
    local line name value n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        line=${line%%#*}
        line=$(printf '%s' "$line" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
        [ -z "$line" ] && continue
        name=${line%%=*}
        value=${line#*=}
        if [[ "$line" != *=* || ! "$name" =~ ^[A-Z][A-Z0-9_]*$ ]]; then
            echo "error: $file line $n: expected VAR=value, got '$line'" >&2
            exit 2
        fi
        [ -z "${!name+x}" ] && export "$name=$value"  # the environment wins over the recipe
    done <"$file"
    RECIPE_FILE=$file
}
