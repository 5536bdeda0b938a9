#!/bin/busybox sh
# Guest init: host / read-only over 9p under a tmpfs overlay, the job folder
# read-write at its host path, the kernel filesystems BPF tools need; then
# run the job's cmd.sh with its output on the job's device (vmtest.out),
# record its status, power off. A guest of another architecture than the
# host's gets a root of its own (vmtest.root=1, 9p tag guestroot) over the
# host's: its programs, and the host's files where it has none.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod "/modules/$m" 2>/dev/null; done
param() { sed -n "s/.*vmtest.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
job=$(param job)
out=$(param out)
root=$(param root)
mkdir -p /lower /upper /newroot /guestroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower
[ "$root" = 1 ] && mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 guestroot /guestroot
mount -t tmpfs tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o "lowerdir=${root:+/guestroot:}/lower,upperdir=/upper/data,workdir=/upper/work" /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmtest_job "/newroot$job"
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
# /tmp stays the overlay's: the host's /tmp (where a checkout may live) shows
# through, and writes stay in guest memory.
mount -t tracefs tracefs /newroot/sys/kernel/tracing
mount -t debugfs debugfs /newroot/sys/kernel/debug
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
# The kernel's own module tree (from the cache, over 9p), for modprobe.
mods=$(param modules)
mkdir -p /newroot/lib/modules
ln -sfn "$mods" "/newroot/lib/modules/$(uname -r)" 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
stty -F "$out" raw -echo 2>/dev/null
chroot /newroot /bin/sh -c "cd '$job' && sh ./cmd.sh" > "$out" 2>&1
echo $? > "/newroot$job/rc"
sync
poweroff -f
