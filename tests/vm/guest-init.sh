#!/bin/busybox sh
# /init of the micro VM guest the end-to-end tests boot with `microv run`
# (Debian's kernel and a busybox initramfs; xtask/src/guest.rs builds it and
# installs it in the emulated machine as /usr/lib/microv-tests/guest/).
#
# It mounts proc, sysfs and devtmpfs, prints `MICROV-GUEST-INIT uptime <s>`,
# then follows the `mvguest.*` words of the kernel command line
# (/proc/cmdline), in their order:
#
#   mvguest.sum=N     MICROV-SUM: <sha256 of `seq 1 N`>   (the hash alone)
#   mvguest.cpus      MICROV-CPUS: <processors in /proc/cpuinfo>
#   mvguest.work=N    one `seq 1 N | sha256sum` pinned to each CPU at once
#                     (taskset), then MICROV-WORK: cpuK=<busy ticks>... from
#                     /proc/stat, so a test sees every CPU did work
#   mvguest.sleep=S   MICROV-SLEEP-BEGIN: uptime <s> clocksource <name>,
#                     `sleep S`, then MICROV-SLEEP-END: uptime <s> slept <s>
#                     timer-irqs <n> clocksource <name>   (the guest's own
#                     clock, /proc/uptime, its clocksource, and the local
#                     timer interrupts during the sleep)
#   mvguest.bench=N   the benchmark's workload (tests/bench/bench.sh runs the
#                     same job in the root): `busybox seq 1 N | busybox gzip
#                     -c | busybox sha256sum` once untimed (warm-up), then
#                     once between two reads of the guest's TSC by
#                     mv-bench-guest: its hash line, then
#                     MVBENCH case=workload iterations=1 tsc=0x… idle_ns=… status=…
#   mvguest.shell     MICROV-SHELL-READY, then an interactive sh on the
#                     console (stdin); when it exits, MICROV-SHELL-EXIT: <status>
#                     and the next word
#   mvguest.end=poweroff|reboot   how the guest ends once every other word
#                     is done (default poweroff; always with -f)
#
# It ends with MICROV-GUEST-END: <poweroff|reboot>. A word it does not know
# or a bad number prints MICROV-GUEST-ERROR: <why> and is skipped. Linux
# hands dotted words to no one (they are module parameters), so they reach
# this script only through /proc/cmdline.
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/ TERM=linux
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mount -t tmpfs tmpfs /tmp

uptime_s() {
    cut -d' ' -f1 /proc/uptime
}

clocksource() {
    cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo '?'
}

timer_irqs() {
    awk '$1 == "LOC:" { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i } END { print n + 0 }' /proc/interrupts
}

number() {
    case "$1" in
    '' | *[!0-9]*) return 1 ;;
    esac
}

echo "MICROV-GUEST-INIT uptime $(uptime_s)"
end=poweroff
for word in $(cat /proc/cmdline); do
    case "$word" in
    mvguest.sum=*)
        n=${word#*=}
        if number "$n"; then
            echo "MICROV-SUM: $(seq 1 "$n" | sha256sum | cut -d' ' -f1)"
        else
            echo "MICROV-GUEST-ERROR: $word: not a number"
        fi
        ;;
    mvguest.cpus)
        echo "MICROV-CPUS: $(grep -c '^processor' /proc/cpuinfo)"
        ;;
    mvguest.work=*)
        n=${word#*=}
        if number "$n"; then
            ncpu=$(grep -c '^processor' /proc/cpuinfo)
            c=0
            while [ "$c" -lt "$ncpu" ]; do
                taskset -c "$c" sh -c "seq 1 $n | sha256sum >/dev/null" &
                c=$((c + 1))
            done
            wait
            echo "MICROV-WORK: $(awk '$1 ~ /^cpu[0-9]+$/ { printf "%s=%d ", $1, $2 + $3 + $4 }' /proc/stat)"
        else
            echo "MICROV-GUEST-ERROR: $word: not a number"
        fi
        ;;
    mvguest.sleep=*)
        s=${word#*=}
        if number "$s"; then
            i0=$(timer_irqs)
            t0=$(uptime_s)
            echo "MICROV-SLEEP-BEGIN: uptime $t0 clocksource $(clocksource)"
            sleep "$s"
            t1=$(uptime_s)
            i1=$(timer_irqs)
            echo "MICROV-SLEEP-END: uptime $t1 slept $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') timer-irqs $((i1 - i0)) clocksource $(clocksource)"
        else
            echo "MICROV-GUEST-ERROR: $word: not a number"
        fi
        ;;
    mvguest.bench=*)
        n=${word#*=}
        if number "$n"; then
            job="busybox seq 1 $n | busybox gzip -c | busybox sha256sum"
            sh -c "$job" >/dev/null
            mv-bench-guest time workload sh -c "$job"
        else
            echo "MICROV-GUEST-ERROR: $word: not a number"
        fi
        ;;
    mvguest.shell)
        echo "MICROV-SHELL-READY"
        rc=0
        sh || rc=$?
        echo "MICROV-SHELL-EXIT: $rc"
        ;;
    mvguest.end=poweroff | mvguest.end=reboot)
        end=${word#*=}
        ;;
    mvguest.*)
        echo "MICROV-GUEST-ERROR: $word: unknown instruction"
        ;;
    esac
done
echo "MICROV-GUEST-END: $end"
"$end" -f
# The init process must not exit (the kernel would panic, and with panic=N
# reboot, which would look like a clean end).
echo "MICROV-GUEST-ERROR: $end -f returned"
while :; do sleep 3600; done
