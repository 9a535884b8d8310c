// SPDX-License-Identifier: GPL-2.0
/*
 * The few kernel facilities rvmx's Rust code needs that are C macros or inline functions
 * without a Rust binding. Each is one line; the Rust side wraps it once (rust/mem.rs).
 */
#include <linux/mm.h>
#include <linux/io.h>

phys_addr_t rvmx_page_to_phys(struct page *page);

phys_addr_t rvmx_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}
