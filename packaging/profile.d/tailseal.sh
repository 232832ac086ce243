# tailseal shell hook: one JSON line per interactive command, for bash and zsh.
#
# Installed as /etc/profile.d/tailseal.sh; also source it from /etc/bash.bashrc and /etc/zsh/zshrc
# so non-login interactive shells are covered. tailseal tails the spool file with
# `parser = { format = "shell" }`.
#
# Line: {"ts","user","uid","tty","cwd","cmd","exit","hist","session","shell","pid","event"}
#   event = "start" (hook installed), "command", or "tamper" (the hook found itself removed:
#   it records that, with the command that did it where known, and reinstalls itself).
#
# Cost: bash: two builtin string tests in the DEBUG trap per simple command, and per prompt one
# function call, one append and one fork (reading history and the trap back); zsh: a preexec
# and a precmd function, no fork.
# Tamper evidence: the functions are readonly; removing the prompt hook is noticed by the DEBUG
# trap (bash) or the other hook (zsh), removing the DEBUG trap is noticed by the prompt hook, and
# the command that removed either was already captured before it ran. Starting a shell without
# profile/rc files is itself a command of the parent shell, and auditd EXECVE records cover the
# rest. The spool (default /var/log/tailseal/shell.jsonl) is owned by the tailseal user (which
# reads it), mode 0622 so users can only append, in a root-owned 0711 directory users cannot
# write (packaging/tmpfiles.d), ideally `chattr +a`; TAILSEAL_SHELL_SPOOL overrides it (tests).
# shellcheck shell=bash disable=SC2034,SC3043,SC3044

case $- in *i*) ;; *) return 0 ;; esac
[ -n "${__tailseal_spool:-}" ] && return 0

__tailseal_spool=${TAILSEAL_SHELL_SPOOL:-/var/log/tailseal/shell.jsonl}
__tailseal_tty=$(tty 2>/dev/null) || __tailseal_tty=""
__tailseal_session=${XDG_SESSION_ID:-$$}
__tailseal_last=""
__tailseal_armed=""
__tailseal_ran=""
__tailseal_cmd=""
__tailseal_tick=1

__tailseal_esc() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/\\r}
    s=${s//[$'\001'-$'\037']/?}
    REPLY=$s
}

__tailseal_write() {  # $1 event, $2 command, $3 exit status, $4 history number
    local ts cwd cmd
    if [ -n "${ZSH_VERSION:-}" ]; then
        ts=${(%):-%D{%Y-%m-%dT%H:%M:%S%z}}
    else
        printf -v ts '%(%Y-%m-%dT%H:%M:%S%z)T' -1
    fi
    __tailseal_esc "$PWD"; cwd=$REPLY
    __tailseal_esc "$2"; cmd=$REPLY
    printf '{"ts":"%s","user":"%s","uid":%s,"tty":"%s","cwd":"%s","cmd":"%s","exit":%s,"hist":%s,"session":"%s","shell":"%s","pid":%s,"event":"%s"}\n' \
        "$ts" "${USER:-${LOGNAME:-}}" "${UID:-0}" "$__tailseal_tty" "$cwd" "$cmd" "${3:-0}" \
        "${4:-0}" "$__tailseal_session" "${ZSH_VERSION:+zsh}${BASH_VERSION:+bash}" "$$" "$1" \
        >>"$__tailseal_spool" 2>/dev/null
}

if [ -n "${ZSH_VERSION:-}" ]; then
    __tailseal_preexec() {
        (( ${precmd_functions[(Ie)__tailseal_precmd]} )) || {  # the last command removed it
            __tailseal_write tamper "$__tailseal_cmd" 0 0
            precmd_functions+=(__tailseal_precmd)
        }
        __tailseal_cmd=$1
        __tailseal_ran=1
    }
    __tailseal_precmd() {
        local rc=$?  # not "status": zsh's read-only alias of $? (the hook then recorded nothing)
        if [ -n "$__tailseal_ran" ]; then
            __tailseal_write command "$__tailseal_cmd" "$rc" "$HISTCMD"
            __tailseal_ran=""
        fi
        (( ${preexec_functions[(Ie)__tailseal_preexec]} )) || {
            __tailseal_write tamper "preexec hook removed" 0 0
            preexec_functions+=(__tailseal_preexec)
        }
    }
    preexec_functions+=(__tailseal_preexec)
    precmd_functions+=(__tailseal_precmd)
    typeset -r __tailseal_spool __tailseal_tty __tailseal_session
    readonly -f __tailseal_preexec __tailseal_precmd __tailseal_write __tailseal_esc 2>/dev/null
elif [ -n "${BASH_VERSION:-}" ]; then
    __tailseal_trap='__tailseal_tick=1; [[ -n $__tailseal_armed ]] && __tailseal_pre; [[ ${PROMPT_COMMAND[*]} == *__tailseal_post*__tailseal_arm* ]] || __tailseal_tamper'
    __tailseal_pre() {  # first simple command after a prompt: remember what is about to run
        local pc=";${PROMPT_COMMAND[*]//[[:space:]]/};"
        [[ $pc == *";${BASH_COMMAND//[[:space:]]/};"* ]] && return 0  # a prompt command
        __tailseal_armed=""
        __tailseal_ran=1
        __tailseal_cmd=$BASH_COMMAND
    }
    __tailseal_tamper() {  # the prompt hooks are gone: say so, and put them back
        __tailseal_write tamper "$__tailseal_cmd" 0 0
        PROMPT_COMMAND="__tailseal_post;${PROMPT_COMMAND:+$PROMPT_COMMAND;}__tailseal_arm"
    }
    __tailseal_arm() {  # last prompt command: the next DEBUG trap is a command the user typed
        __tailseal_armed=1
        __tailseal_tick=""
    }
    __tailseal_post() {
        local status=$? line num
        # The one fork per prompt: the full command line (with pipes and lists) from history.
        line=$(HISTTIMEFORMAT='' builtin history 1)
        line=${line#"${line%%[! ]*}"}
        num=${line%%[!0-9]*}
        if [ -n "$num" ] && [ "$num" != "$__tailseal_last" ] && [ -n "$__tailseal_last" ]; then
            __tailseal_last=$num
            line=${line#"$num"}
            line=${line#"${line%%[! ]*}"}
            __tailseal_write command "$line" "$status" "$num"
        elif [ -n "$__tailseal_ran" ]; then  # not in history (HISTCONTROL, set +o history)
            __tailseal_write command "$__tailseal_cmd" "$status" "${num:-0}"
        fi
        : "${__tailseal_last:=${num:-0}}"
        if [ -z "$__tailseal_tick" ]; then  # not even this prompt fired the DEBUG trap
            __tailseal_write tamper "DEBUG trap removed" 0 "${num:-0}"
            trap "$__tailseal_trap" DEBUG
        fi
        __tailseal_ran=""
        return $status
    }
    PROMPT_COMMAND="__tailseal_post;${PROMPT_COMMAND:+$PROMPT_COMMAND;}__tailseal_arm"
    trap "$__tailseal_trap" DEBUG
    readonly __tailseal_spool __tailseal_tty __tailseal_session __tailseal_trap
    readonly -f __tailseal_pre __tailseal_post __tailseal_tamper __tailseal_write __tailseal_esc \
        __tailseal_arm
fi
__tailseal_write start "" 0 0
