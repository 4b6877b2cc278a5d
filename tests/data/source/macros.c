// SPDX-License-Identifier: GPL-2.0-only
/* Written for vpmu's tests: every kernel macro form the C reader must get through. */
#include <linux/percpu.h>

DEFINE_PER_CPU(bool, demo_flag);
static DEFINE_PER_CPU(unsigned long, demo_count);

static __always_inline void demo_inline(int cpu)
{
	guard(irqsave)();
	this_cpu_write(demo_flag, true);
}

noinstr void demo_noinstr(void)
{
	scoped_guard (raw_spinlock_irqsave, &demo_lock) {
		demo_count_inc();
		demo_flag_clear();
	}
	demo_after();
}
EXPORT_SYMBOL_FOR_MODULES(demo_noinstr, "kvm");

#ifdef CONFIG_DEMO_FEATURE
void demo_twice(u32 value)
{
	/* the real one */
	demo_write(value);
#ifdef CONFIG_DEMO_DEBUG
	demo_trace(value);
#endif
	demo_done();
}
#else
void demo_twice(u32 value)
{
	demo_stub();
}
#endif /* CONFIG_DEMO_FEATURE */
EXPORT_SYMBOL_FOR_KVM(demo_twice);

static int
demo_split_header(unsigned int cmd, struct pt_regs *regs)
{
	int ret;

	if (demo_gate())
		return 0;
	for_each_set_bit(bit, mask, 64) {
		demo_bit(bit);
	}
	if (cmd) {
		demo_a(
			cmd);
	} else {
		demo_b();
	}
done:
	return ret;
}
