// The device models the simulator knows, with the QOM properties real QEMU shows for them (a subset:
// what a management layer reads). Device state itself lives in vm.ts.

export interface DeviceModel {
  /** QOM type, e.g. virtio-net-pci. */
  driver: string;
  pci: boolean;
  /** Takes a `netdev` property (a NIC). */
  nic: boolean;
  /** Child object carrying the virtio device (`virtio-backend`), as for virtio-*-pci proxies. */
  virtioChild?: string;
  /** Properties accepted by -device / device_add, with their QOM type names. */
  props: Record<string, 'str' | 'bool' | 'int32' | 'uint32' | 'uint16' | 'OnOffAuto'>;
}

const pciProps = {
  addr: 'int32',
  romfile: 'str',
  rombar: 'uint32',
  multifunction: 'bool',
  bus: 'str',
  bootindex: 'int32',
} as const;

const virtioPciProps = {
  ...pciProps,
  'disable-legacy': 'OnOffAuto',
  'disable-modern': 'bool',
  vectors: 'uint32',
  ioeventfd: 'bool',
  iommu_platform: 'bool',
  packed: 'bool',
} as const;

export const DEVICE_MODELS: Record<string, DeviceModel> = {
  'virtio-net-pci': {
    driver: 'virtio-net-pci',
    pci: true,
    nic: true,
    virtioChild: 'virtio-net-device',
    props: {
      ...virtioPciProps,
      netdev: 'str',
      mac: 'str',
      mq: 'bool',
      host_mtu: 'uint16',
      rx_queue_size: 'uint16',
      tx_queue_size: 'uint16',
      failover: 'bool',
    },
  },
  e1000: { driver: 'e1000', pci: true, nic: true, props: { ...pciProps, netdev: 'str', mac: 'str' } },
  'virtio-blk-pci': {
    driver: 'virtio-blk-pci',
    pci: true,
    nic: false,
    virtioChild: 'virtio-blk-device',
    props: { ...virtioPciProps, drive: 'str', serial: 'str' },
  },
  'virtio-rng-pci': {
    driver: 'virtio-rng-pci',
    pci: true,
    nic: false,
    virtioChild: 'virtio-rng-device',
    props: { ...virtioPciProps },
  },
  'ide-hd': {
    driver: 'ide-hd',
    pci: false,
    nic: false,
    props: { drive: 'str', bus: 'str', bootindex: 'int32', serial: 'str' },
  },
};

/** PCI slot of the n-th PCI device on i440fx/q35 with -nodefaults: slots 0 and 1 are the chipset. */
export function pciSlot(index: number): number {
  return 2 + index;
}

/** QEMU's default MACs: 52:54:00:12:34:56, then :57, ... per NIC. */
export function defaultMac(nicIndex: number): string {
  const last = (0x56 + nicIndex) & 0xff;
  return `52:54:00:12:34:${last.toString(16).padStart(2, '0')}`;
}

/** Parse a QOM bool the way qdev properties do (`on`/`off`, `true`/`false`, `yes`/`no`). */
export function parseBool(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (typeof v !== 'string') return undefined;
  if (['on', 'true', 'yes', 'y'].includes(v)) return true;
  if (['off', 'false', 'no', 'n'].includes(v)) return false;
  return undefined;
}
