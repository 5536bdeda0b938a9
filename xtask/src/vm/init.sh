#!/bin/busybox sh
# Guest init: host / read-only over 9p under a tmpfs overlay, the job folder
# read-write at its host path, the kernel filesystems BPF tools need; then
# run the job's cmd.sh with its output on ttyS1, record its status, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod "/modules/$m" 2>/dev/null; done
job=$(sed -n 's/.*vmtest.job=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower
mount -t tmpfs tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot
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
mods=$(sed -n 's/.*vmtest.modules=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /newroot/lib/modules
ln -sfn "$mods" "/newroot/lib/modules/$(uname -r)" 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
stty -F /dev/ttyS1 raw -echo 2>/dev/null
chroot /newroot /bin/sh -c "cd '$job' && sh ./cmd.sh" > /dev/ttyS1 2>&1
echo $? > "/newroot$job/rc"
sync
poweroff -f
