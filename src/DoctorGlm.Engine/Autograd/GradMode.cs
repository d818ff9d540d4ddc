namespace DoctorGlm.Engine.Autograd;

/// <summary>Turns graph recording on and off for the current thread.</summary>
public static class GradMode
{
    [ThreadStatic] private static int t_disabledDepth;

    /// <summary>True when ops record backward functions.</summary>
    public static bool IsEnabled => t_disabledDepth == 0;

    /// <summary>Disables recording until the returned handle is disposed (inference, optimizer steps).</summary>
    public static NoGradScope NoGrad() { t_disabledDepth++; return new NoGradScope(false); }

    /// <summary>Re-enables recording inside a no-grad region until disposed (used by gradient checkpointing).</summary>
    internal static NoGradScope EnableGrad()
    {
        int saved = t_disabledDepth;
        t_disabledDepth = 0;
        return new NoGradScope(true, saved);
    }

    /// <summary>Restores the previous grad mode when disposed.</summary>
    public readonly struct NoGradScope : IDisposable
    {
        private readonly bool _restore;
        private readonly int _saved;
        internal NoGradScope(bool restore, int saved = 0) { _restore = restore; _saved = saved; }

        /// <summary>Restores the previous mode.</summary>
        public void Dispose()
        {
            if (_restore) t_disabledDepth = _saved;
            else t_disabledDepth--;
        }
    }
}
